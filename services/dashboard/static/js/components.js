// Building blocks the pages share: panels, tables, pagers, export links, filters.

import { exportUrl } from "./api.js";
import { h, heading, num } from "./dom.js";

export function panel(zh, en, body, tools) {
  return h(
    "section",
    { class: "panel" },
    h("header", { class: "panel-head" }, heading(2, zh, en), tools ? h("div", { class: "tools" }, tools) : null),
    body,
  );
}

export function errorBox(error) {
  const message = error && error.message ? error.message : String(error);
  return h("p", { class: "error", role: "alert" }, `加载失败 Failed to load：${message}`);
}

const SCOPE_MESSAGES = {
  403: ["该内容不在本单位的查看范围内。", "This is outside your unit's scope."],
  404: ["没有这条记录，或它不在本单位的查看范围内。", "No such record within your unit's scope."],
};

/** A whole page that could not be shown: outside the viewer's scope, not found, or failed. */
export function errorPage(error) {
  const status = error && error.status;
  const [zh, en] = status === 403 ? ["无权查看", "Forbidden"] : status === 404 ? ["未找到", "Not found"] : ["加载失败", "Failed to load"];
  // Out of scope is an answer, not a failure: say it plainly, without the API's codes.
  const explained = SCOPE_MESSAGES[status];
  return h(
    "div",
    { class: "page page-error", dataset: { status: status || "" } },
    h("h1", null, zh, h("small", { class: "en" }, en)),
    explained ? h("p", { class: "lead" }, explained[0], h("small", { class: "en" }, explained[1])) : errorBox(error),
    h("p", null, h("a", { href: "#/" }, "返回总览 Back to the overview")),
  );
}

export function empty() {
  return h("p", { class: "empty" }, "暂无数据 ", h("small", { class: "en" }, "No data"));
}

// The API's own column labels win (the same as in its CSV header); the page's are the fallback.
function label(column, apiColumns) {
  const fromApi = column.own ? null : (apiColumns || []).find((c) => c.key === column.key);
  const zh = (fromApi && fromApi.zh) || column.zh || column.key;
  const en = (fromApi && fromApi.en) || column.en || "";
  return [zh, en ? h("small", { class: "en" }, en) : null];
}

/**
 * A table that scrolls sideways on a narrow screen. columns: [{key, zh, en, render(row), num, own}];
 * `own`: the page's label even if the API has one.
 */
export function dataTable(columns, rows, options = {}) {
  if (!rows || rows.length === 0) return empty();
  const head = h(
    "tr",
    null,
    columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, label(c, options.apiColumns))),
  );
  const body = rows.map((row) =>
    h(
      "tr",
      { class: options.rowClass ? options.rowClass(row) : null, dataset: options.rowData ? options.rowData(row) : null },
      columns.map((c) => {
        const value = c.render ? c.render(row) : c.num ? num(row[c.key]) : row[c.key] ?? "—";
        return h("td", { class: c.num ? "num" : null }, value);
      }),
    ),
  );
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": options.caption || "表格" },
    h("table", { class: "data" }, options.caption ? h("caption", null, options.caption) : null, h("thead", null, head), h("tbody", null, body)),
  );
}

/** "第 1–100 条，共 153 条" with previous / next buttons that change the page's offset. */
export function pager(list, onOffset) {
  const total = list.total ?? (list.items || []).length;
  const limit = list.limit || (list.items || []).length || 1;
  const offset = list.offset || 0;
  const first = total === 0 ? 0 : offset + 1;
  const last = Math.min(offset + limit, total);
  return h(
    "div",
    { class: "pager" },
    h("span", { class: "pager-count" }, `第 ${num(first)}–${num(last)} 条，共 ${num(total)} 条`),
    h(
      "button",
      { type: "button", disabled: offset <= 0, onclick: () => onOffset(Math.max(0, offset - limit)) },
      "上一页",
    ),
    h(
      "button",
      { type: "button", disabled: offset + limit >= total, onclick: () => onOffset(offset + limit) },
      "下一页",
    ),
  );
}

/** CSV and XLSX of the same filtered list, straight from the API. */
export function exportLinks(path, params) {
  return h(
    "span",
    { class: "exports" },
    "导出 ",
    h("a", { href: exportUrl(path, params, "csv"), download: "", class: "export-csv" }, "CSV"),
    h("a", { href: exportUrl(path, params, "xlsx"), download: "", class: "export-xlsx" }, "XLSX"),
  );
}

/**
 * Filters as a form of selects and dates. A change applies at once; `apply` gets the new values.
 * fields: [{name, zh, en, type: "select"|"date", options: [[value, label]]}]
 */
export function filterBar(fields, values, apply) {
  const form = h("form", { class: "filters", role: "search" });
  const read = () => {
    const out = {};
    for (const f of fields) out[f.name] = form.elements[f.name].value;
    return out;
  };
  for (const f of fields) {
    let control;
    if (f.type === "select") {
      control = h(
        "select",
        { name: f.name },
        h("option", { value: "" }, f.any || "全部"),
        f.options.map(([value, text]) => h("option", { value, selected: String(values[f.name] ?? "") === String(value) }, text)),
      );
    } else {
      control = h("input", { type: f.type || "text", name: f.name, value: values[f.name] || "" });
    }
    control.addEventListener("change", () => apply(read()));
    form.appendChild(h("label", null, h("span", null, f.zh, f.en ? h("small", { class: "en" }, f.en) : null), control));
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply(read());
  });
  return form;
}

/** Key figures as cards. items: [{zh, en, value, note, tone}] */
export function cards(items) {
  return h(
    "div",
    { class: "cards" },
    items.map((item) =>
      h(
        "div",
        { class: `card ${item.tone ? `card-${item.tone}` : ""}`, dataset: item.key ? { key: item.key } : null },
        h("div", { class: "card-label" }, item.zh, h("small", { class: "en" }, item.en)),
        h("div", { class: "card-value" }, item.value),
        item.note ? h("div", { class: "card-note" }, item.note) : null,
      ),
    ),
  );
}

/** Runs each loader on its own, so one failing endpoint shows its error in its own panel only. */
export async function loadAll(loaders) {
  const names = Object.keys(loaders);
  const results = await Promise.allSettled(names.map((n) => loaders[n]()));
  const out = {};
  names.forEach((n, i) => {
    out[n] = results[i].status === "fulfilled" ? { ok: true, value: results[i].value } : { ok: false, error: results[i].reason };
  });
  return out;
}

/** The panel's body, or its error. */
export function settled(result, render) {
  return result.ok ? render(result.value) : errorBox(result.error);
}
