// 预警督办: the unit's alert inbox; acknowledge an alert, or (the supervision section) issue a
// supervision order about it. Both buttons send the real commands; the page changes when the hub
// has recorded them (the live stream tells it), not before.
//
// Two kinds of alert share the inbox: a clock's alerts (yellow ... re_escalated), about a deadline
// missed or near; and risk alerts (风险预警), announced anomalies such as one business inspected by
// several units within 30 days. A risk alert has no deadline: the hub sets it to the detection
// time, so the page shows when it was found instead of a deadline or days overdue.

import * as api from "../api.js";
import { empty, exportLinks, filterBar, loadAll, pager, panel, settled } from "../components.js";
import { badge, dateTime, h, heading, num, today } from "../dom.js";
import { areaName, chineseHalf, levelName, levelNameEn, townshipName, unitName, unitOptions, withNames } from "../labels.js";

const LEVELS = ["yellow", "red", "escalated", "re_escalated", "risk"];
const LEVEL_TONE = { yellow: "warn", red: "bad", escalated: "bad", re_escalated: "bad", risk: "risk" };
const RISK = "risk";
const ORDER_REPLY_DAYS = 5;
const PAGE = 50;
// /v1/inbox answers at most this many alerts, newest first, and knows no offset: the page pages
// through them itself. The export links carry every matching alert.
const FETCH_LIMIT = 1000;

function subjectLink(alert) {
  if (alert.about_area === "case" || (alert.case_id && alert.case_id === alert.about_subject)) {
    return h("a", { href: `#/case/${encodeURIComponent(alert.about_subject)}` }, alert.about_subject);
  }
  if (alert.about_area === "township") return townshipName(alert.about_subject);
  return h("a", { href: `#/matter/${encodeURIComponent(alert.about_area)}/${encodeURIComponent(alert.about_subject)}` }, alert.about_subject);
}

function overdue(alert) {
  if (alert.level === RISK) return null;
  const days = Math.floor((alert.overdue_seconds || 0) / 86400);
  return days > 0 ? badge(`逾期 ${num(days)} 天`, "bad") : null;
}

/** The alerts' page, and the details of the anomalies behind its risk alerts (by anomaly id). */
async function loadPage(items, offset) {
  // Alerts acknowledged or withdrawn meanwhile may leave fewer pages than the address says.
  const start = offset < items.length ? offset : Math.floor(Math.max(0, items.length - 1) / PAGE) * PAGE;
  const shown = items.slice(start, start + PAGE);
  // A risk alert names the anomaly, not what was found: the anomaly's detail says which business,
  // which units, which week. Without it (out of the viewer's scope, or failed) the card still stands.
  const asks = new Map();
  for (const a of shown) {
    if (a.level === RISK) asks.set(`${a.open}|${a.about_subject}`, { subject: a.about_subject, open: a.open, limit: 100 });
  }
  const answers = await Promise.allSettled([...asks.values()].map((params) => api.get("/v1/anomalies", params)));
  const details = new Map();
  for (const answer of answers) {
    if (answer.status !== "fulfilled") continue;
    for (const anomaly of answer.value.items || []) details.set(anomaly.anomaly_id, anomaly.detail);
  }
  return { start, shown, details };
}

function detailLine(detail) {
  const zh = chineseHalf(detail);
  if (!zh) return null; // an English-only detail (codes and steps) says less than the rule's name
  return h("p", { class: "alert-detail", title: detail }, h("span", { class: "citation-label" }, "发现情况 ", h("small", null, "Finding")), withNames(zh));
}

function levelBadge(level) {
  const en = levelNameEn(level);
  const node = badge(levelName(level), LEVEL_TONE[level] || "plain");
  if (en) node.append(" ", h("small", null, en));
  return node;
}

/** Acknowledged: the badge, then who and when on a line of its own, so the badge stays short. */
function status(alert) {
  if (!alert.open) return badge("已撤回", "plain");
  if (!alert.acknowledged_at) return badge("待确认", "warn");
  return [
    badge("已确认", "ok"),
    h("span", { class: "ack-by" }, unitName(alert.acknowledged_by), " ", dateTime(alert.acknowledged_at)),
  ];
}

// A proposed reply date from a simulated year lies in the past; the API refuses those.
function replyBy(proposed) {
  const earliest = today(ORDER_REPLY_DAYS);
  return proposed && proposed >= today() ? proposed : earliest;
}

// A risk alert is not late: it asks for the finding to be checked, not for a delay to be explained.
function defaultReason(alert) {
  const what = alert.rule_name_zh || "事项";
  return alert.level === RISK ? `发现风险：${what}，请核查并反馈处理情况` : `${what}已超期，请说明原因并限期办结`;
}

function orderDialog(alert, app) {
  const proposed = alert.proposed_order || {};
  const units = unitOptions();
  // A risk alert about a whole township names no responsible unit: its enforcement office answers.
  const office = alert.township ? `${alert.township}.enforcement-office` : "";
  const toUnit = proposed.to_unit || alert.responsible_unit || office;
  const form = h(
    "form",
    { method: "dialog", class: "order-form" },
    h("h2", null, "下达督办令 ", h("small", { class: "en" }, "Issue a supervision order")),
    h("p", { class: "note" }, `${alert.rule_name_zh || ""} · ${areaName(alert.about_area)} ${alert.about_subject}`),
    h(
      "label",
      null,
      h("span", null, "督办对象 ", h("small", { class: "en" }, "To unit")),
      h("select", { name: "to_unit", required: true }, units.map(([id, name]) => h("option", { value: id, selected: id === toUnit }, name))),
    ),
    h(
      "label",
      null,
      h("span", null, "督办事由 ", h("small", { class: "en" }, "Reason")),
      h("textarea", { name: "reason", required: true, maxlength: 2000, rows: 3 }, proposed.reason || defaultReason(alert)),
    ),
    h(
      "label",
      null,
      h("span", null, "回复期限 ", h("small", { class: "en" }, "Reply by")),
      h("input", { type: "date", name: "reply_by", required: true, min: today(), value: replyBy(proposed.reply_by) }),
    ),
    h(
      "label",
      null,
      h("span", null, "紧急程度 ", h("small", { class: "en" }, "Level")),
      h("select", { name: "level" }, h("option", { value: "normal" }, "一般 normal"), h("option", { value: "urgent" }, "紧急 urgent")),
    ),
    h("p", { class: "error", role: "alert", hidden: true }),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit", class: "primary", value: "send" }, "下达 ", h("small", null, "Issue")),
      h("button", { type: "button", value: "cancel", class: "cancel" }, "取消 ", h("small", null, "Cancel")),
    ),
  );
  const dialog = h("dialog", { class: "dialog" }, form);
  const resume = app.pause();
  let done = false;
  // Closed by a button, by Escape, or after sending: drop it and let live refreshes run again.
  dialog.addEventListener("close", () => {
    if (done) return;
    done = true;
    dialog.remove();
    resume();
  });
  const close = () => dialog.close();
  form.querySelector(".cancel").addEventListener("click", close);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = form.querySelector(".error");
    const send = form.querySelector("button[type=submit]");
    send.disabled = true;
    const values = Object.fromEntries(new FormData(form));
    try {
      const result = await api.send("POST", "/v1/supervision-orders", {
        to_unit: values.to_unit,
        about_area: alert.about_area,
        about_subject: alert.about_subject,
        reason: values.reason,
        reply_by: values.reply_by,
        level: values.level,
        township: alert.township || null,
        case_id: alert.case_id || null,
      });
      close();
      app.toast(`督办令已下达 Order issued：${result.order_id}`);
    } catch (failure) {
      error.textContent = failure.message;
      error.hidden = false;
      send.disabled = false;
    }
  });
  document.body.appendChild(dialog);
  dialog.showModal();
}

function alertCard(alert, app, own, detail) {
  const acknowledged = Boolean(alert.acknowledged_at);
  const risk = alert.level === RISK;
  const actions = h("div", { class: "actions" });
  if (own && alert.open && !acknowledged) {
    const button = h("button", { type: "button", class: "primary ack" }, "确认 ", h("small", null, "Acknowledge"));
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api.send("POST", `/v1/alerts/${encodeURIComponent(alert.alert_id)}/acknowledge`, { note: null });
        button.replaceWith(badge("已提交，等待记录 Sent", "info"));
        app.toast("已确认，平台记录后更新 Acknowledged");
      } catch (failure) {
        button.disabled = false;
        app.toast(failure.message, "bad");
      }
    });
    actions.appendChild(button);
  }
  if (app.me.kind === "supervision" && alert.open) {
    actions.appendChild(
      h("button", { type: "button", class: "order", onclick: () => orderDialog(alert, app) }, "下达督办 ", h("small", null, "Order")),
    );
  }
  return h(
    "article",
    { class: `alert-card level-${alert.level}${alert.open ? "" : " withdrawn"}`, dataset: { alertId: alert.alert_id, level: alert.level } },
    h(
      "header",
      null,
      levelBadge(alert.level),
      h("strong", { class: "alert-rule" }, alert.rule_name_zh || alert.rule_id),
      alert.rule_name_en ? h("small", { class: "en alert-rule-en" }, alert.rule_name_en) : null,
      !risk && alert.provisional ? badge("期限暂定", "plain") : null,
      overdue(alert),
    ),
    h(
      "dl",
      { class: "facts compact" },
      [
        ["事项", "Subject", alert.about_area === "township" ? subjectLink(alert) : [areaName(alert.about_area), " ", subjectLink(alert)]],
        ["镇街", "Township", townshipName(alert.township)],
        ["责任单位", "Responsible", unitName(alert.responsible_unit)],
        // A risk alert has no deadline of its own: the hub stores its detection time there.
        risk ? ["发现", "Detected", dateTime(alert.deadline)] : ["期限", "Deadline", dateTime(alert.deadline)],
        ["发出", "Raised", dateTime(alert.raised_at)],
        ["状态", "Status", status(alert)],
      ].map(([zh, en, value]) => h("div", null, h("dt", null, zh, h("small", { class: "en" }, en)), h("dd", null, value))),
    ),
    risk && detail ? detailLine(detail) : null,
    alert.citation
      ? h("p", { class: "citation" }, h("span", { class: "citation-label" }, "依据 ", h("small", null, "Basis")), alert.citation)
      : null,
    actions,
  );
}

export default async function inbox(route, app) {
  const q = route.query;
  const me = app.me;
  const supervisor = me.kind === "supervision";
  const offset = Number(q.offset || 0);
  const query = { level: q.level, open: q.open || "true", unit: supervisor ? q.unit : undefined };
  const data = await loadAll({ list: () => api.get("/v1/inbox", { ...query, limit: FETCH_LIMIT }) });
  const view = data.list.ok ? await loadPage(data.list.value.items || [], offset) : null;
  const own = !query.unit || query.unit === me.unit;
  const fields = [
    { name: "level", zh: "级别", en: "Level", type: "select", options: LEVELS.map((l) => [l, `${levelName(l)} ${levelNameEn(l)}`.trim()]) },
    { name: "open", zh: "范围", en: "Scope", type: "select", any: "未撤回 open", options: [["false", "已撤回 withdrawn"]] },
  ];
  if (supervisor) {
    fields.push({
      name: "unit",
      zh: "查看单位",
      en: "Unit",
      type: "select",
      any: `本单位 ${me.name_zh}`,
      options: unitOptions().filter(([id]) => id !== me.unit),
    });
  }
  const filters = filterBar(fields, { ...q, open: q.open === "false" ? "false" : "" }, (values) =>
    app.setQuery({ ...values, open: values.open || undefined, offset: 0 }),
  );
  return h(
    "div",
    { class: "page page-inbox" },
    heading(1, "预警督办", "Alert inbox"),
    h(
      "p",
      { class: "lead" },
      own ? `${me.name_zh}收到的预警。` : `${unitName(query.unit)}收到的预警（只读）。`,
      h("small", { class: "en" }, "Acknowledge an alert, or issue a supervision order about it."),
    ),
    panel(
      "预警",
      "Alerts",
      [
        filters,
        settled(data.list, (list) => {
          const items = list.items || [];
          const { start, shown, details } = view;
          return [
            shown.length ? h("div", { class: "alert-list" }, shown.map((a) => alertCard(a, app, own, details.get(a.alert_id)))) : empty(),
            items.length ? pager({ items: shown, total: items.length, limit: PAGE, offset: start }, (next) => app.setQuery({ offset: next })) : null,
            items.length >= FETCH_LIMIT
              ? h("p", { class: "note" }, `仅显示最新 ${num(FETCH_LIMIT)} 条，全部预警请导出。`, h("small", { class: "en" }, "Newest alerts only: export for all."))
              : null,
          ];
        }),
      ],
      // Every matching alert, as the page filters them (the file ignores the page's paging).
      exportLinks("/v1/inbox", query),
    ),
  );
}
