// DOM building and formatting. Text always goes in as text nodes, never as HTML: what the hub
// stores came from many units, and none of it may run as markup in a supervisor's browser.

const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    child.forEach((c) => append(node, c));
  } else if (child instanceof Node) {
    node.appendChild(child);
  } else {
    node.appendChild(document.createTextNode(String(child)));
  }
}

function setAttrs(node, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (value === true) {
      node.setAttribute(key, "");
    } else {
      node.setAttribute(key, String(value));
    }
  }
}

/** h("a", {href: "#/"}, "text", child, [more]) */
export function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  append(node, children);
  return node;
}

/** A Chinese label with its English name as a small second line. */
export function bi(zh, en) {
  return en ? [zh, h("small", { class: "en" }, en)] : zh;
}

export function heading(level, zh, en, extra) {
  return h(`h${level}`, null, zh, en ? h("small", { class: "en" }, en) : null, extra || null);
}

const numberFormat = new Intl.NumberFormat("zh-CN");
const decimalFormat = new Intl.NumberFormat("zh-CN", { maximumFractionDigits: 2 });

export function num(value) {
  if (value === null || value === undefined || value === "") return "—";
  return Number.isInteger(value) ? numberFormat.format(value) : decimalFormat.format(value);
}

export function pct(value) {
  if (value === null || value === undefined) return "—";
  return `${(value * 100).toFixed(1)}%`;
}

const dateTimeParts = new Intl.DateTimeFormat("zh-CN", {
  timeZone: "Asia/Shanghai",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

function parts(value) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return null;
  const p = {};
  for (const part of dateTimeParts.formatToParts(date)) p[part.type] = part.value;
  return p;
}

/** China time, as the units read their deadlines: 2022-03-01 14:20 */
export function dateTime(value) {
  if (!value) return "—";
  const p = parts(value);
  return p ? `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}` : String(value);
}

export function dateOnly(value) {
  if (!value) return "—";
  if (/^\d{4}-\d{2}-\d{2}$/.test(value)) return value;
  const p = parts(value);
  return p ? `${p.year}-${p.month}-${p.day}` : String(value);
}

/** Today in China time, as YYYY-MM-DD. */
export function today(offsetDays = 0) {
  const p = parts(Date.now() + offsetDays * 86400000);
  return `${p.year}-${p.month}-${p.day}`;
}

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind || "plain"}` }, text);
}

/** "?a=1&b=2" from an object, leaving out empty values. */
export function queryString(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value === null || value === undefined || value === "") continue;
    search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}
