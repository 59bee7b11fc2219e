// 职责争议清单: responsibility disputes between units, from raised to decided and listed.

import * as api from "../api.js";
import { dataTable, exportLinks, filterBar, loadAll, pager, panel, settled } from "../components.js";
import { dateOnly, dateTime, h, heading } from "../dom.js";
import { categoryName, townshipName, unitName } from "../labels.js";
import { scopeTownships, statusBadge } from "./shared.js";

const PAGE = 50;
export const STATUS = {
  raised: ["已提出", "warn"],
  referred: ["已提请裁定", "info"],
  decided: ["已裁定", "ok"],
  listed: ["已列入清单", "ok"],
};

// Twelve columns: the days (the time is in the tooltip) and wrapped unit names keep most on screen.
const day = (value) => (value ? h("span", { title: dateTime(value) }, dateOnly(value)) : "—");
const names = (units) => h("span", { class: "names" }, units.filter(Boolean).map(unitName).join("、") || "—");

const COLUMNS = [
  { key: "dispute_id", zh: "争议编号", en: "Dispute" },
  { key: "status", zh: "状态", en: "Status", render: (r) => statusBadge(r.status, STATUS) },
  { key: "township", zh: "镇街", en: "Township", render: (r) => townshipName(r.township) },
  { key: "matter", zh: "争议事项", en: "Matter", render: (r) => h("span", { class: "detail" }, r.matter || "—") },
  { key: "units", zh: "涉及单位", en: "Units", render: (r) => names(r.units || []) },
  { key: "raised_at", zh: "提出时间", en: "Raised", render: (r) => day(r.raised_at) },
  { key: "referred_to", zh: "提请", en: "Referred to", render: (r) => names([r.referred_to]) },
  { key: "decided_at", zh: "裁定时间", en: "Decided", render: (r) => day(r.decided_at) },
  { key: "responsible_unit", zh: "确定责任单位", en: "Responsible", render: (r) => names([r.responsible_unit]) },
  { key: "matter_category", zh: "事项类别", en: "Category", render: (r) => (r.matter_category ? categoryName(r.matter_category) : "—") },
  { key: "list_entry_id", zh: "清单编号", en: "List entry", render: (r) => r.list_entry_id || "—" },
  { key: "listed_at", zh: "列入清单", en: "Listed", render: (r) => day(r.listed_at) },
];

export default async function disputes(route, app) {
  const q = route.query;
  const offset = Number(q.offset || 0);
  const params = { status: q.status, township: q.township, limit: PAGE, offset };
  const data = await loadAll({
    list: () => api.get("/v1/disputes", params),
    townships: () => scopeTownships(),
  });
  return h(
    "div",
    { class: "page page-disputes" },
    heading(1, "职责争议清单", "Responsibility disputes"),
    h("p", { class: "lead" }, "单位间职责争议的提出、裁定与列入清单情况。", h("small", { class: "en" }, "Disputes over who is responsible, and how they were settled.")),
    panel(
      "争议事项",
      "Disputes",
      [
        filterBar(
          [
            { name: "status", zh: "状态", en: "Status", type: "select", options: Object.entries(STATUS).map(([k, v]) => [k, v[0]]) },
            { name: "township", zh: "镇街", en: "Township", type: "select", options: data.townships.ok ? data.townships.value : [] },
          ],
          q,
          (values) => app.setQuery({ ...values, offset: 0 }),
        ),
        settled(data.list, (list) => [
          dataTable(COLUMNS, list.items, { apiColumns: list.columns, caption: "职责争议" }),
          pager({ ...list, offset }, (next) => app.setQuery({ offset: next })),
        ]),
      ],
      exportLinks("/v1/disputes", params),
    ),
  );
}
