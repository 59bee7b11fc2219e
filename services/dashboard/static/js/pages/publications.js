// 行政处罚决定公示台账: every decision, its publication deadline, and whether it was published.

import * as api from "../api.js";
import { dataTable, exportLinks, filterBar, loadAll, pager, panel, settled } from "../components.js";
import { dateTime, h, heading } from "../dom.js";
import { townshipName, unitName } from "../labels.js";
import { scopeTownships, statusBadge } from "./shared.js";

const PAGE = 50;
export const STATUS = {
  pending: ["待公示", "info"],
  overdue: ["逾期未公示", "bad"],
  published: ["已公示", "ok"],
  withdrawn: ["已撤回", "plain"],
};

// A publication's id is a UUID: its first block tells records apart, the whole is in the tooltip.
function shortId(id) {
  if (!id) return "—";
  return id.length > 12 ? h("span", { class: "short-id", title: id }, `${id.slice(0, 8)}…`) : id;
}

const COLUMNS = [
  { key: "case_id", zh: "案件编号", en: "Case", render: (r) => h("a", { href: `#/case/${encodeURIComponent(r.case_id)}` }, r.case_id) },
  { key: "status", zh: "状态", en: "Status", render: (r) => statusBadge(r.status, STATUS) },
  { key: "township", zh: "镇街", en: "Township", render: (r) => townshipName(r.township) },
  { key: "handling_unit", zh: "办案单位", en: "Unit", render: (r) => unitName(r.handling_unit) },
  { key: "decided_at", zh: "决定时间", en: "Decided", render: (r) => dateTime(r.decided_at) },
  { key: "deadline", zh: "公示期限", en: "Deadline", render: (r) => dateTime(r.deadline) },
  { key: "published_at", zh: "公示时间", en: "Published", render: (r) => dateTime(r.published_at) },
  { key: "publication_id", zh: "公示编号", en: "Publication", render: (r) => shortId(r.publication_id) },
  { key: "withdrawn_at", zh: "撤回时间", en: "Withdrawn", render: (r) => dateTime(r.withdrawn_at) },
];

export default async function publications(route, app) {
  const q = route.query;
  const offset = Number(q.offset || 0);
  const params = { status: q.status, township: q.township, limit: PAGE, offset };
  const data = await loadAll({
    list: () => api.get("/v1/publications/register", params),
    townships: () => scopeTownships(),
  });
  return h(
    "div",
    { class: "page page-publications" },
    heading(1, "公示台账", "Publication register"),
    h(
      "p",
      { class: "lead" },
      "行政处罚决定应在法定期限内公示（国办发〔2018〕118号：7个工作日）。",
      h("small", { class: "en" }, "Decisions must be published within the legal deadline."),
    ),
    panel(
      "处罚决定公示",
      "Decisions and their publication",
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
          dataTable(COLUMNS, list.items, { apiColumns: list.columns, caption: "公示台账", rowClass: (r) => (r.status === "overdue" ? "row-bad" : null) }),
          pager({ ...list, offset }, (next) => app.setQuery({ offset: next })),
        ]),
      ],
      exportLinks("/v1/publications/register", params),
    ),
  );
}
