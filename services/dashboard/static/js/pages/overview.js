// 区级总览: the townships ranked, their trend, and the load per officer against the district's 79.95.

import * as api from "../api.js";
import { barChart, lineChart } from "../charts.js";
import { cards, dataTable, exportLinks, filterBar, loadAll, panel, settled } from "../components.js";
import { h, heading, num, pct } from "../dom.js";

const REFERENCE = 79.95;

export const RANKING_COLUMNS = [
  { key: "rank", zh: "排名", en: "Rank", num: true },
  {
    key: "name_zh",
    zh: "镇街",
    en: "Township",
    render: (r) => h("a", { href: `#/township/${encodeURIComponent(r.township)}`, class: "township-link" }, r.name_zh || r.township),
  },
  { key: "cases_filed", zh: "立案", en: "Filed", num: true },
  { key: "cases_open", zh: "在办", en: "Open", num: true },
  { key: "cases_closed", zh: "办结", en: "Closed", num: true },
  { key: "officers", zh: "执法人员", en: "Officers", num: true },
  { key: "cases_per_officer", zh: "人均办案", en: "Per officer", num: true },
  { key: "on_time_rate", zh: "按时率", en: "On time", num: true, render: (r) => pct(r.on_time_rate) },
  { key: "loops_open", zh: "未闭环", en: "Open loops", num: true },
  { key: "loops_overdue", zh: "逾期", en: "Overdue", num: true },
  { key: "loops_escalated", zh: "已升级", en: "Escalated", num: true },
  { key: "anomalies_open", zh: "异常", en: "Anomalies", num: true },
];

function trendChart(trend) {
  const items = trend.items || [];
  if (items.length === 0) return h("p", { class: "empty" }, "暂无数据 No data");
  return lineChart(
    items.map((i) => i.period),
    [
      { zh: "立案", en: "filed", values: items.map((i) => i.cases_filed) },
      { zh: "作出决定", en: "decided", values: items.map((i) => i.cases_decided) },
      { zh: "结案", en: "closed", values: items.map((i) => i.cases_closed) },
    ],
    { label: "案件趋势 Case trend" },
  );
}

function totalsCards(totals, reference) {
  return cards([
    { key: "cases_filed", zh: "立案", en: "Cases filed", value: num(totals.cases_filed) },
    { key: "cases_open", zh: "在办", en: "Open", value: num(totals.cases_open) },
    { key: "cases_closed", zh: "办结", en: "Closed", value: num(totals.cases_closed) },
    {
      key: "cases_per_officer",
      zh: "人均办案",
      en: "Per officer",
      value: num(totals.cases_per_officer),
      note: `参考值 ${num(reference)}`,
      tone: totals.cases_per_officer > reference ? "warn" : null,
    },
    { key: "on_time_rate", zh: "按时率", en: "On time", value: pct(totals.on_time_rate) },
    { key: "loops_overdue", zh: "逾期环节", en: "Overdue loops", value: num(totals.loops_overdue), tone: totals.loops_overdue ? "bad" : null },
    { key: "loops_escalated", zh: "已升级", en: "Escalated", value: num(totals.loops_escalated) },
    { key: "anomalies_open", zh: "未处理异常", en: "Open anomalies", value: num(totals.anomalies_open) },
  ]);
}

export default async function overview(route, app) {
  const q = route.query;
  const range = { from: q.from, to: q.to };
  const period = q.period || "month";
  const data = await loadAll({
    overview: () => api.get("/v1/analysis/overview", range),
    trend: () => api.get("/v1/analysis/trend", { ...range, period }),
  });
  // The auditor reads the whole district too, without writing.
  const district = app.me.role === "district" || app.me.role === "auditor";
  const title = district ? heading(1, "区级总览", "District overview") : heading(1, "辖区概览", "Overview");
  const filters = filterBar(
    [
      { name: "from", zh: "起", en: "From", type: "date" },
      { name: "to", zh: "止（不含）", en: "To, exclusive", type: "date" },
      { name: "period", zh: "周期", en: "Period", type: "select", any: "按月 month", options: [["week", "按周 week"]] },
    ],
    { ...range, period: q.period },
    (values) => app.setQuery(values),
  );
  const body = [title, filters];
  if (data.overview.ok) {
    const ov = data.overview.value;
    const reference = (ov.reference && ov.reference.cases_per_officer) || REFERENCE;
    const rows = [...(ov.items || [])].sort((a, b) => (a.rank ?? 999) - (b.rank ?? 999));
    if (ov.totals) body.push(totalsCards(ov.totals, reference));
    body.push(
      panel(
        "镇街排名",
        "Township ranking",
        [
          h("p", { class: "note" }, "排名按按时率从高到低，其次逾期环节从少到多。", h("small", { class: "en" }, "Ranked by on-time rate, then fewer overdue loops.")),
          dataTable(RANKING_COLUMNS, rows, {
            apiColumns: ov.columns,
            caption: "镇街排名",
            rowData: (r) => ({ township: r.township }),
          }),
        ],
        exportLinks("/v1/analysis/overview", range),
      ),
    );
    // A row without a township (clocks the hub could not place) has no bar: there is nothing to compare.
    const placed = rows.filter((r) => r.township);
    const charts = h("div", { class: "grid-2" });
    charts.appendChild(
      panel(
        "按时率排名",
        "On-time rate ranking",
        barChart(
          placed.map((r) => ({
            label: r.name_zh || r.township,
            value: r.on_time_rate || 0,
            text: pct(r.on_time_rate),
            href: `#/township/${encodeURIComponent(r.township)}`,
          })),
          { max: 1, label: "按时率排名" },
        ),
      ),
    );
    const byLoad = [...placed].sort((a, b) => (b.cases_per_officer || 0) - (a.cases_per_officer || 0));
    charts.appendChild(
      panel(
        "人均办案量",
        "Cases per officer",
        barChart(
          byLoad.map((r) => ({
            label: r.name_zh || r.township,
            value: r.cases_per_officer || 0,
            tone: (r.cases_per_officer || 0) > reference ? "warn" : null,
            href: `#/township/${encodeURIComponent(r.township)}`,
          })),
          { reference: { value: reference, zh: `参考 ${num(reference)}` }, label: "人均办案量" },
        ),
      ),
    );
    body.push(charts);
  } else {
    body.push(settled(data.overview));
  }
  body.push(
    panel(
      "案件趋势",
      "Case trend",
      settled(data.trend, trendChart),
      data.trend.ok ? exportLinks("/v1/analysis/trend", { ...range, period }) : null,
    ),
  );
  return h("div", { class: "page page-overview" }, body);
}
