// 协同跟踪: every coordination loop (transfers, assistance, consultations ...), open or closed.

import * as api from "../api.js";
import { dataTable, exportLinks, filterBar, pager, panel, settled, loadAll } from "../components.js";
import { badge, dateTime, h, heading } from "../dom.js";
import { areaName, eventLabel, matterAreas, townshipName, unitName } from "../labels.js";
import { scopeTownships, statusBadge } from "./shared.js";

const PAGE = 50;
export const STATUS = { open: ["未闭环", "warn"], overdue: ["已逾期", "bad"], closed: ["已闭环", "ok"] };

const COLUMNS = [
  { key: "area_name_zh", zh: "机制", en: "Mechanism", render: (r) => r.area_name_zh || areaName(r.area) },
  {
    key: "subject_id",
    zh: "事项编号",
    en: "Matter",
    render: (r) => h("a", { href: `#/matter/${encodeURIComponent(r.area)}/${encodeURIComponent(r.subject_id)}` }, r.subject_id),
  },
  { key: "status", zh: "状态", en: "Status", render: (r) => statusBadge(r.status, STATUS) },
  { key: "township", zh: "镇街", en: "Township", render: (r) => townshipName(r.township) },
  { key: "initiator", zh: "发起单位", en: "Initiator", render: (r) => unitName(r.initiator) },
  { key: "parties", zh: "参与单位", en: "Parties", render: (r) => h("span", { class: "names" }, (r.parties || []).map(unitName).join("、") || "—") },
  { key: "opened_at", zh: "开始", en: "Opened", render: (r) => dateTime(r.opened_at) },
  { key: "closed_at", zh: "闭环", en: "Closed", render: (r) => dateTime(r.closed_at) },
  { key: "last_event_type", zh: "最近进展", en: "Last step", render: (r) => (r.last_event_type ? eventLabel(r.last_event_type).zh : "—") },
  { key: "escalated", zh: "升级", en: "Escalated", render: (r) => (r.escalated ? badge("已升级", "bad") : "—") },
];

export default async function coordination(route, app) {
  const q = route.query;
  const offset = Number(q.offset || 0);
  const params = { area: q.area, status: q.status, township: q.township, limit: PAGE, offset };
  const data = await loadAll({
    list: () => api.get("/v1/coordination", params),
    townships: () => scopeTownships(),
  });
  const filters = filterBar(
    [
      { name: "area", zh: "机制", en: "Mechanism", type: "select", options: matterAreas() },
      { name: "status", zh: "状态", en: "Status", type: "select", options: Object.entries(STATUS).map(([k, v]) => [k, v[0]]) },
      { name: "township", zh: "镇街", en: "Township", type: "select", options: data.townships.ok ? data.townships.value : [] },
    ],
    q,
    (values) => app.setQuery({ ...values, offset: 0 }),
  );
  return h(
    "div",
    { class: "page page-coordination" },
    heading(1, "协同跟踪", "Coordination tracker"),
    h("p", { class: "lead" }, "移送、协助、会商、联合执法等协同事项，从发起到闭环。", h("small", { class: "en" }, "Every coordination loop from request to receipt.")),
    panel(
      "协同事项",
      "Matters",
      [
        filters,
        settled(data.list, (list) => [
          dataTable(COLUMNS, list.items, { apiColumns: list.columns, caption: "协同事项", rowClass: (r) => (r.overdue ? "row-bad" : null) }),
          pager({ ...list, offset }, (next) => app.setQuery({ offset: next })),
        ]),
      ],
      exportLinks("/v1/coordination", params),
    ),
  );
}
