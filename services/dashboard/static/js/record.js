// The full-process record (全过程记录) and the clocks of a case or a coordination matter.

import { dataTable, empty } from "./components.js";
import { badge, dateTime, h } from "./dom.js";
import { eventLabel, levelName, ruleName, unitName } from "./labels.js";

/** Events in the order they occurred, each with who published it. */
export function timeline(events) {
  if (!events || events.length === 0) return empty();
  return h(
    "ol",
    { class: "timeline" },
    events.map((e) => {
      const label = eventLabel(e.type);
      return h(
        "li",
        { class: "timeline-entry", dataset: { type: e.type } },
        h("time", { datetime: e.time }, dateTime(e.time)),
        h("span", { class: "timeline-what" }, label.zh, label.en ? h("small", { class: "en" }, label.en) : null),
        h("span", { class: "timeline-who" }, unitName(e.source)),
      );
    }),
  );
}

// Judged from what the hub recorded, not from this browser's clock: a demo hub runs in 2022.
function clockStatus(c) {
  const raised = c.alerts_raised || [];
  if (c.open) {
    if (raised.includes("escalated") || raised.includes("re_escalated")) return badge("已逾期·已升级", "bad");
    if (raised.includes("red")) return badge("已逾期", "bad");
    if (raised.includes("yellow")) return badge("临近期限", "warn");
    return badge("进行中", "info");
  }
  if (c.stopped_at && c.deadline && new Date(c.stopped_at) > new Date(c.deadline)) return badge("超时完成", "warn");
  return badge("已完成", "ok");
}

export function clockTable(clocks) {
  return dataTable(
    [
      { key: "rule_id", zh: "时限", en: "Clock", render: (c) => ruleName(c.rule_id) },
      { key: "responsible", zh: "责任单位", en: "Responsible", render: (c) => unitName(c.responsible) },
      { key: "started_at", zh: "起算", en: "Started", render: (c) => dateTime(c.started_at) },
      {
        key: "deadline",
        zh: "期限",
        en: "Deadline",
        render: (c) => [dateTime(c.deadline), c.provisional ? badge("暂定", "plain") : null],
      },
      { key: "stopped_at", zh: "完成", en: "Done", render: (c) => dateTime(c.stopped_at) },
      { key: "status", zh: "状态", en: "Status", own: true, render: clockStatus },
      {
        key: "alerts_raised",
        zh: "已发预警",
        en: "Alerts",
        render: (c) => ((c.alerts_raised || []).length ? c.alerts_raised.map((l) => levelName(l)).join("、") : "—"),
      },
    ],
    clocks || [],
    { caption: "时限" },
  );
}
