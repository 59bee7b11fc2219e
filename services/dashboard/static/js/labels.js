// Names for codes, from /dashboard/labels.json (built from the hub's directory, mechanisms and
// clock rules). An unknown code is shown as it is rather than hidden.

let labels = {
  areas: {},
  events: {},
  rules: {},
  units: {},
  townships: {},
  categories: {},
  stages: {},
  levels: {},
  roles: {},
};
// Built on first use from the labels: every unit id and township code, longest first.
let codePattern = null;

export async function loadLabels() {
  const response = await fetch("/dashboard/labels.json", { credentials: "same-origin" });
  if (response.ok) labels = await response.json();
  codePattern = null;
  return labels;
}

function zh(table, code) {
  const entry = labels[table][code];
  return entry ? entry.zh : code || "—";
}

function en(table, code) {
  const entry = labels[table][code];
  return entry ? entry.en : "";
}

export const unitName = (id) => zh("units", id);
export const townshipName = (code) => zh("townships", code);
export const townshipNameEn = (code) => en("townships", code);
export const ruleName = (id) => zh("rules", id);
export const areaName = (area) => zh("areas", area);
export const areaNameEn = (area) => en("areas", area);
export const categoryName = (code) => zh("categories", code);
export const stageName = (code) => zh("stages", code);
export const levelName = (code) => zh("levels", code);
export const levelNameEn = (code) => en("levels", code);
export const roleName = (code) => zh("roles", code);

/** The mechanisms that are coordination matters (transfer, assistance ...), for the filters. */
export function matterAreas() {
  return Object.entries(labels.areas)
    .filter(([, entry]) => entry.matter)
    .map(([code, entry]) => [code, entry.zh]);
}

/** "cn.gov.liandong.case.filed.v1" -> 立案 */
export function eventLabel(type) {
  const parts = String(type).replace(/^cn\.gov\.liandong\./, "").split(".");
  const key = `${parts[0]}.${parts[1]}`;
  const entry = labels.events[key];
  return entry ? { zh: entry.zh, en: entry.en } : { zh: key, en: "" };
}

export function allTownships() {
  return Object.entries(labels.townships).map(([code, entry]) => [code, entry.zh]);
}

/** Case stages in their order (lead ... archived), for the filters. */
export function stageOptions() {
  return Object.entries(labels.stages).map(([code, entry]) => [code, entry.zh]);
}

export const anomalyName = (kind) => zh("anomalies", kind);

/** Every unit of the directory as [id, Chinese name], in Chinese collation order. */
export function unitOptions() {
  return Object.entries(labels.units)
    .map(([id, entry]) => [id, entry.zh])
    .sort((a, b) => a[1].localeCompare(b[1], "zh-CN"));
}

/**
 * A text from the hub (an anomaly's detail) with the unit ids and township codes in it replaced by
 * their Chinese names: "xinzao.market-supervision" reads 新造市场监管所.
 */
export function withNames(text) {
  if (!text) return text;
  if (codePattern === null) {
    const codes = [...Object.keys(labels.units), ...Object.keys(labels.townships)].sort((a, b) => b.length - a.length);
    const escaped = codes.map((c) => c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    codePattern = escaped.length ? new RegExp(`(?<![\\w.-])(${escaped.join("|")})(?![\\w-]|\\.\\w)`, "g") : /$^/g;
  }
  return String(text).replace(codePattern, (code) => (labels.units[code] || labels.townships[code]).zh);
}

/** The Chinese half of a "中文 | English" text from the hub, or null if it has no Chinese half. */
export function chineseHalf(text) {
  const parts = String(text || "").split(" | ");
  return parts.length > 1 ? parts[0] : null;
}
