// 案件详情: the case, its full-process record, every clock, every linked mechanism, its anomalies.

import * as api from "../api.js";
import { empty, errorBox, panel } from "../components.js";
import { badge, dateTime, h, heading, num } from "../dom.js";
import { anomalyName, areaName, categoryName, chineseHalf, stageName, townshipName, unitName, withNames } from "../labels.js";
import { clockTable, timeline } from "../record.js";

// The symbols of case.decided's CaseOutcome.
const OUTCOMES = {
  penalty: "给予处罚",
  no_penalty: "不予处罚",
  not_established: "违法事实不能成立",
  transferred_to_judicial: "移送司法机关",
  other: "其他处理",
};

function facts(items) {
  return h(
    "dl",
    { class: "facts" },
    items.map(([zh, en, value]) => h("div", null, h("dt", null, zh, h("small", { class: "en" }, en)), h("dd", null, value ?? "—"))),
  );
}

function linkedMatter(ref, loaded) {
  const href = `#/matter/${encodeURIComponent(ref.area)}/${encodeURIComponent(ref.id)}`;
  const summary = h(
    "summary",
    null,
    h("span", { class: "matter-area" }, areaName(ref.area)),
    " ",
    h("a", { href }, ref.id),
    loaded.ok ? badge(loaded.value.open ? "未闭环" : "已闭环", loaded.value.open ? "warn" : "ok") : null,
  );
  let inner;
  if (!loaded.ok) {
    inner = errorBox(loaded.error);
  } else {
    const m = loaded.value;
    inner = [
      facts([
        ["发起单位", "Initiator", unitName(m.initiator)],
        ["参与单位", "Parties", (m.parties || []).map(unitName).join("、") || "—"],
        ["开始", "Opened", dateTime(m.opened_at)],
        ["闭环", "Closed", dateTime(m.closed_at)],
      ]),
      timeline(m.events),
    ];
  }
  return h("details", { class: "matter", open: true }, summary, inner);
}

export default async function casePage(route) {
  const id = route.params[0];
  const c = await api.get(`/v1/cases/${encodeURIComponent(id)}`);
  const refs = c.matters || [];
  const matters = await Promise.allSettled(refs.map((m) => api.get(`/v1/matters/${encodeURIComponent(m.area)}/${encodeURIComponent(m.id)}`)));
  const openAnomalies = (c.anomalies || []).filter((a) => a.open);
  return h(
    "div",
    { class: "page page-case" },
    h(
      "p",
      { class: "crumbs" },
      h("a", { href: "#/" }, "总览"),
      " › ",
      c.township ? h("a", { href: `#/township/${encodeURIComponent(c.township)}` }, townshipName(c.township)) : "—",
      " › ",
      c.case_id,
    ),
    heading(1, `案件 ${c.case_id}`, "Case"),
    c.title ? h("p", { class: "lead" }, c.title) : null,
    facts([
      ["镇街", "Township", townshipName(c.township)],
      ["类别", "Category", categoryName(c.category)],
      ["办案单位", "Handling unit", unitName(c.handling_unit)],
      ["阶段", "Stage", badge(stageName(c.stage), "info")],
      ["重大案件", "Major case", c.requires_legal_review ? "是（需法制审核）" : "否"],
      ["处理结果", "Outcome", c.outcome ? OUTCOMES[c.outcome] || c.outcome : "—"],
      ["罚款", "Fine", c.fine_amount_fen != null ? `${num(c.fine_amount_fen / 100)} 元` : "—"],
      ["立案时间", "Filed", dateTime(c.filed_at)],
      ["决定时间", "Decided", dateTime(c.decided_at)],
      ["结案时间", "Closed", dateTime(c.closed_at)],
      ["事件数", "Events", num(c.event_count)],
    ]),
    panel("全过程记录", "Full-process record", timeline(c.events)),
    panel("时限", "Clocks", clockTable(c.clocks)),
    panel(
      "关联协同事项",
      "Linked mechanisms",
      refs.length ? refs.map((ref, i) => linkedMatter(ref, matters[i].status === "fulfilled" ? { ok: true, value: matters[i].value } : { ok: false, error: matters[i].reason })) : empty(),
    ),
    panel(
      "异常",
      "Anomalies",
      (c.anomalies || []).length
        ? h(
            "ul",
            { class: "anomalies" },
            c.anomalies.map((a) => h("li", null, badge(a.open ? "未处理" : "已消除", a.open ? "bad" : "ok"), " ", anomalyName(a.kind), "：", withNames(chineseHalf(a.detail) || a.detail) || "—")),
          )
        : empty(),
      openAnomalies.length ? badge(`${openAnomalies.length} 项未处理`, "bad") : null,
    ),
  );
}
