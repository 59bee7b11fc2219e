// 镇街详情: one township's stages, load per officer, clocks kept, loops, anomalies and its cases.

import * as api from "../api.js";
import { barChart, lineChart } from "../charts.js";
import { cards, dataTable, empty, exportLinks, filterBar, loadAll, pager, panel, settled } from "../components.js";
import { dateTime, h, heading, num, pct } from "../dom.js";
import { categoryName, chineseHalf, ruleName, stageName, stageOptions, townshipName, townshipNameEn, unitName, withNames } from "../labels.js";

const REFERENCE = 79.95;
const CASES_PAGE = 20;

function stagesPanel(stages) {
  const row = (stages.items || [])[0];
  if (!row) return empty();
  const columns = (stages.columns || []).filter((c) => !["group", "name_zh", "total"].includes(c.key));
  const keys = columns.length ? columns.map((c) => c.key) : Object.keys(row).filter((k) => !["group", "name_zh", "total"].includes(k));
  const label = (key) => {
    const c = columns.find((x) => x.key === key);
    return c ? c.zh : stageName(key);
  };
  return [
    barChart(
      keys.map((k) => ({ label: label(k), value: row[k] || 0 })),
      { label: "各阶段案件数 Cases by stage" },
    ),
    h("p", { class: "note" }, `合计 ${num(row.total)} 件`, h("small", { class: "en" }, "total")),
  ];
}

// The API calls its grouping column 名称 (Name) whatever it groups by: the page says what it is.
function loadPanel(load) {
  const reference = (load.reference && load.reference.cases_per_officer) || REFERENCE;
  const items = load.items || [];
  return [
    barChart(
      items.map((r) => ({
        label: r.name_zh || unitName(r.group),
        value: r.cases_per_officer || 0,
        tone: (r.cases_per_officer || 0) > reference ? "warn" : null,
      })),
      { reference: { value: reference, zh: `参考 ${num(reference)}` }, label: "人均办案量" },
    ),
    dataTable(
      [
        { key: "name_zh", zh: "单位", en: "Unit", own: true, render: (r) => r.name_zh || unitName(r.group) },
        { key: "cases_filed", zh: "立案", en: "Filed", num: true },
        { key: "officers", zh: "执法人员", en: "Officers", num: true },
        { key: "cases_per_officer", zh: "人均办案", en: "Per officer", num: true },
      ],
      items,
      { apiColumns: load.columns },
    ),
  ];
}

function onTimePanel(onTime) {
  return dataTable(
    [
      { key: "name_zh", zh: "时限", en: "Clock", own: true, render: (r) => r.name_zh || ruleName(r.group) },
      { key: "closed", zh: "已完成", en: "Closed", num: true },
      { key: "on_time", zh: "按时", en: "On time", num: true },
      { key: "late", zh: "超时", en: "Late", num: true },
      { key: "open", zh: "进行中", en: "Open", num: true },
      { key: "open_overdue", zh: "已逾期", en: "Overdue", num: true },
      { key: "on_time_rate", zh: "按时率", en: "On-time rate", num: true, render: (r) => pct(r.on_time_rate) },
    ],
    onTime.items || [],
    { apiColumns: onTime.columns, rowClass: (r) => (r.open_overdue > 0 ? "row-warn" : null) },
  );
}

function loopsPanel(loops) {
  return dataTable(
    [
      { key: "name_zh", zh: "机制", en: "Mechanism", render: (r) => r.name_zh || r.area },
      { key: "open", zh: "未闭环", en: "Open", num: true },
      { key: "overdue", zh: "逾期", en: "Overdue", num: true },
      { key: "escalated", zh: "已升级", en: "Escalated", num: true },
      { key: "closed", zh: "已闭环", en: "Closed", num: true },
    ],
    loops.items || [],
    { apiColumns: loops.columns, rowClass: (r) => (r.overdue > 0 ? "row-warn" : null) },
  );
}

export function anomalyTable(anomalies) {
  return dataTable(
    [
      { key: "kind_zh", zh: "类型", en: "Kind", render: (r) => r.kind_zh || r.kind },
      {
        key: "subject",
        zh: "对象",
        en: "Subject",
        render: (r) =>
          r.area === "case"
            ? h("a", { href: `#/case/${encodeURIComponent(r.subject)}` }, r.subject)
            : r.area === "township"
              ? townshipName(r.subject)
              : h("a", { href: `#/matter/${encodeURIComponent(r.area)}/${encodeURIComponent(r.subject)}` }, r.subject),
      },
      { key: "detail", zh: "说明", en: "Detail", render: (r) => h("span", { class: "detail", title: r.detail || null }, withNames(chineseHalf(r.detail) || r.detail) || "—") },
      { key: "occurred_at", zh: "发生时间", en: "Occurred", render: (r) => dateTime(r.occurred_at) },
      { key: "detected_at", zh: "发现时间", en: "Detected", render: (r) => dateTime(r.detected_at) },
    ],
    anomalies.items || [],
    { apiColumns: anomalies.columns },
  );
}

function rateTable(result, columns) {
  return dataTable(columns, result.items || [], { apiColumns: result.columns });
}

function casesPanel(list, app, offset) {
  return [
    dataTable(
      [
        { key: "case_id", zh: "案件编号", en: "Case", render: (r) => h("a", { href: `#/case/${encodeURIComponent(r.case_id)}` }, r.case_id) },
        { key: "title", zh: "案由", en: "Title", render: (r) => r.title || "—" },
        { key: "category", zh: "类别", en: "Category", render: (r) => categoryName(r.category) },
        { key: "stage", zh: "阶段", en: "Stage", render: (r) => stageName(r.stage) },
        { key: "handling_unit", zh: "办案单位", en: "Unit", render: (r) => unitName(r.handling_unit) },
        { key: "filed_at", zh: "立案时间", en: "Filed", render: (r) => dateTime(r.filed_at) },
      ],
      list.items || [],
      { apiColumns: list.columns, caption: "案件列表" },
    ),
    pager({ ...list, offset }, (next) => app.setQuery({ offset: next })),
  ];
}

export default async function township(route, app) {
  const code = route.params[0];
  const q = route.query;
  const offset = Number(q.offset || 0);
  const scope = { township: code };
  const casesQuery = { township: code, stage: q.stage, limit: CASES_PAGE, offset };
  const data = await loadAll({
    overview: () => api.get("/v1/analysis/overview", scope),
    trend: () => api.get("/v1/analysis/trend", { ...scope, period: "month" }),
    stages: () => api.get("/v1/analysis/stages", { ...scope, group_by: "township" }),
    load: () => api.get("/v1/analysis/load", { ...scope, group_by: "unit" }),
    onTime: () => api.get("/v1/analysis/on-time", { ...scope, group_by: "rule" }),
    loops: () => api.get("/v1/analysis/loops", scope),
    anomalies: () => api.get("/v1/anomalies", { ...scope, open: true, limit: 50 }),
    reconsiderations: () => api.get("/v1/analysis/reconsiderations", { ...scope, group_by: "township" }),
    reviews: () => api.get("/v1/analysis/file-reviews", { ...scope, group_by: "township" }),
    cases: () => api.get("/v1/cases", casesQuery),
  });
  // Outside the viewer's townships the API refuses (403): the page says so instead of empty panels.
  if (!data.overview.ok && [403, 404].includes(data.overview.error.status)) throw data.overview.error;
  const body = [
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "总览"), " › ", townshipName(code)),
    heading(1, townshipName(code), townshipNameEn(code)),
  ];
  if (data.overview.ok) {
    const row = (data.overview.value.items || []).find((r) => r.township === code);
    if (row) {
      body.push(
        cards([
          { key: "rank", zh: "排名", en: "Rank", value: row.rank ? `第 ${row.rank} 名` : "—" },
          { key: "cases_filed", zh: "立案", en: "Filed", value: num(row.cases_filed) },
          { key: "cases_open", zh: "在办", en: "Open", value: num(row.cases_open) },
          { key: "cases_per_officer", zh: "人均办案", en: "Per officer", value: num(row.cases_per_officer), note: `参考值 ${num(REFERENCE)}` },
          { key: "on_time_rate", zh: "按时率", en: "On time", value: pct(row.on_time_rate) },
          { key: "loops_overdue", zh: "逾期环节", en: "Overdue loops", value: num(row.loops_overdue), tone: row.loops_overdue ? "bad" : null },
          { key: "anomalies_open", zh: "未处理异常", en: "Open anomalies", value: num(row.anomalies_open) },
        ]),
      );
    }
  } else {
    body.push(settled(data.overview));
  }
  const grid = h("div", { class: "grid-2" });
  grid.append(
    panel("案件阶段", "Cases by stage", settled(data.stages, stagesPanel), exportLinks("/v1/analysis/stages", { ...scope, group_by: "township" })),
    panel(
      "人均办案量",
      "Load per officer",
      settled(data.load, loadPanel),
      exportLinks("/v1/analysis/load", { ...scope, group_by: "unit" }),
    ),
  );
  body.push(grid);
  body.push(
    panel(
      "案件趋势",
      "Trend",
      settled(data.trend, (t) =>
        (t.items || []).length
          ? lineChart(
              t.items.map((i) => i.period),
              [
                { zh: "立案", en: "filed", values: t.items.map((i) => i.cases_filed) },
                { zh: "作出决定", en: "decided", values: t.items.map((i) => i.cases_decided) },
                { zh: "结案", en: "closed", values: t.items.map((i) => i.cases_closed) },
              ],
            )
          : empty(),
      ),
      exportLinks("/v1/analysis/trend", { ...scope, period: "month" }),
    ),
    panel("各类时限按时率", "On-time rate per clock", settled(data.onTime, onTimePanel), exportLinks("/v1/analysis/on-time", { ...scope, group_by: "rule" })),
    panel("协同机制闭环", "Loops per mechanism", settled(data.loops, loopsPanel), exportLinks("/v1/analysis/loops", scope)),
  );
  const rates = h("div", { class: "grid-2" });
  rates.append(
    panel(
      "复议与纠错",
      "Reconsiderations",
      settled(data.reconsiderations, (r) =>
        rateTable(r, [
          { key: "decided", zh: "作出决定", en: "Decided", num: true },
          { key: "reconsiderations", zh: "复议", en: "Reconsiderations", num: true },
          { key: "revoked_or_changed", zh: "撤销或变更", en: "Revoked/changed", num: true },
          { key: "reconsideration_rate", zh: "复议率", en: "Rate", num: true, render: (x) => pct(x.reconsideration_rate) },
          { key: "revoked_or_changed_rate", zh: "纠错率", en: "Revoked rate", num: true, render: (x) => pct(x.revoked_or_changed_rate) },
        ]),
      ),
      exportLinks("/v1/analysis/reconsiderations", { ...scope, group_by: "township" }),
    ),
    panel(
      "案卷评查",
      "Case-file reviews",
      settled(data.reviews, (r) =>
        rateTable(r, [
          { key: "reviews", zh: "评查数", en: "Reviews", num: true },
          { key: "passed", zh: "合格", en: "Passed", num: true },
          { key: "pass_rate", zh: "合格率", en: "Pass rate", num: true, render: (x) => pct(x.pass_rate) },
          { key: "average_score", zh: "平均分", en: "Average", num: true },
        ]),
      ),
      exportLinks("/v1/analysis/file-reviews", { ...scope, group_by: "township" }),
    ),
  );
  body.push(rates);
  body.push(
    panel(
      "未处理异常",
      "Open anomalies",
      settled(data.anomalies, anomalyTable),
      exportLinks("/v1/anomalies", { ...scope, open: true }),
    ),
  );
  body.push(
    panel(
      "案件",
      "Cases",
      [
        filterBar([{ name: "stage", zh: "阶段", en: "Stage", type: "select", options: stageOptions() }], q, (v) =>
          app.setQuery({ ...v, offset: 0 }),
        ),
        settled(data.cases, (list) => casesPanel(list, app, offset)),
      ],
      exportLinks("/v1/cases", casesQuery),
    ),
  );
  return h("div", { class: "page page-township" }, body);
}
