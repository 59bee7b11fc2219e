// 协同事项详情: one coordination matter (a transfer, an assistance request ...), its record and clocks.

import * as api from "../api.js";
import { loadAll, panel, settled } from "../components.js";
import { badge, dateTime, h, heading } from "../dom.js";
import { areaName, areaNameEn, townshipName, unitName } from "../labels.js";
import { clockTable, timeline } from "../record.js";

export default async function matterPage(route) {
  const [area, id] = route.params;
  const data = await loadAll({
    matter: () => api.get(`/v1/matters/${encodeURIComponent(area)}/${encodeURIComponent(id)}`),
    clocks: () => api.get("/v1/clocks", { area, subject: id }),
  });
  if (!data.matter.ok) throw data.matter.error;
  const m = data.matter.value;
  return h(
    "div",
    { class: "page page-matter" },
    h("p", { class: "crumbs" }, h("a", { href: "#/coordination" }, "协同跟踪"), " › ", areaName(area), " › ", id),
    heading(1, `${areaName(area)} ${id}`, areaNameEn(area)),
    h(
      "dl",
      { class: "facts" },
      [
        ["状态", "Status", badge(m.open ? "未闭环" : "已闭环", m.open ? "warn" : "ok")],
        ["镇街", "Township", townshipName(m.township)],
        ["发起单位", "Initiator", unitName(m.initiator)],
        ["参与单位", "Parties", (m.parties || []).map(unitName).join("、") || "—"],
        ["关联案件", "Case", m.case_id ? h("a", { href: `#/case/${encodeURIComponent(m.case_id)}` }, m.case_id) : "—"],
        ["开始", "Opened", dateTime(m.opened_at)],
        ["闭环", "Closed", dateTime(m.closed_at)],
      ].map(([zh, en, value]) => h("div", null, h("dt", null, zh, h("small", { class: "en" }, en)), h("dd", null, value))),
    ),
    panel("全过程记录", "Full-process record", timeline(m.events)),
    panel("时限", "Clocks", settled(data.clocks, (c) => clockTable(c.items))),
  );
}
