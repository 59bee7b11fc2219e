// Charts drawn by hand as inline SVG: no chart library, nothing fetched from elsewhere.
// Each chart is drawn at about the width it will be shown at, so its text stays legible on a phone.

import { h, num, svg } from "./dom.js";

/**
 * A place for a chart, drawn once the page is on screen and its width is known, and drawn again
 * when the window changes size: a chart drawn at the width it is shown at keeps its text legible.
 */
function slot(draw, className) {
  const figure = h("figure", { class: `chart-figure ${className}` });
  figure.drawChart = draw;
  return figure;
}

/** Draw (or redraw) every chart under `root` at its container's width. */
export function drawCharts(root) {
  for (const figure of root.querySelectorAll(".chart-figure")) {
    if (!figure.drawChart) continue;
    const width = Math.max(260, Math.min(1800, figure.clientWidth || 600));
    figure.replaceChildren(...figure.drawChart(width));
  }
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function legend(series) {
  return h(
    "ul",
    { class: "legend" },
    series.map((s, i) => h("li", null, h("span", { class: `swatch s${i + 1}` }), s.zh, s.en ? h("small", { class: "en" }, s.en) : null)),
  );
}

/**
 * Lines over periods. labels: ["2022-01", ...]; series: [{zh, en, values: [n, ...]}].
 */
export function lineChart(labels, series, options = {}) {
  return slot((width) => [drawLines(width, labels, series, options), legend(series)], "line");
}

function drawLines(width, labels, series, options) {
  const height = options.height || 260;
  const m = { left: 52, right: 14, top: 14, bottom: 44 };
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.map((v) => v || 0))));
  const x = (i) => m.left + (labels.length <= 1 ? plotW / 2 : (i * plotW) / (labels.length - 1));
  const y = (v) => m.top + plotH - ((v || 0) / max) * plotH;
  const chart = svg("svg", {
    class: "chart line-chart",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": options.label || series.map((s) => s.zh).join("、"),
  });
  for (let t = 0; t <= 4; t++) {
    const value = (max * t) / 4;
    chart.appendChild(svg("line", { class: "grid", x1: m.left, x2: width - m.right, y1: y(value), y2: y(value) }));
    chart.appendChild(svg("text", { class: "tick", x: m.left - 6, y: y(value) + 4, "text-anchor": "end" }, num(Math.round(value))));
  }
  const every = Math.max(1, Math.ceil(labels.length / Math.max(2, Math.floor(plotW / 64))));
  labels.forEach((text, i) => {
    const last = i === labels.length - 1;
    if (i % every !== 0 && !last) return;
    if (!last && labels.length - 1 - i < every / 2) return; // would run into the last label
    const anchor = last && labels.length > 1 ? "end" : i === 0 && labels.length > 1 ? "start" : "middle";
    chart.appendChild(svg("text", { class: "tick", x: x(i), y: height - m.bottom + 18, "text-anchor": anchor }, text));
  });
  series.forEach((s, k) => {
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    chart.appendChild(svg("polyline", { class: `series s${k + 1}`, points }));
    s.values.forEach((v, i) => {
      chart.appendChild(
        svg("circle", { class: `point s${k + 1}`, cx: x(i), cy: y(v), r: 3 }, svg("title", null, `${labels[i]} ${s.zh}：${num(v)}`)),
      );
    });
  });
  return chart;
}

/**
 * Horizontal bars, one per item, in the given order. items: [{label, value, text, href, tone}];
 * reference: {value, zh} draws a dashed line, e.g. the district's 79.95 cases per officer.
 */
export function barChart(items, options = {}) {
  return slot((width) => [drawBars(width, items, options)], "bars");
}

function drawBars(width, items, options) {
  const row = 26;
  // Chinese names run about 13 px a character at this size; long unit names get up to 45%.
  const longest = Math.max(2, ...items.map((i) => String(i.label).length));
  const labelW = Math.round(Math.min(width * 0.45, Math.max(60, longest * 13 + 10)));
  const fit = Math.max(2, Math.floor((labelW - 10) / 13));
  const short = (text) => (String(text).length > fit ? `${String(text).slice(0, fit - 1)}…` : String(text));
  const valueW = 64;
  const m = { top: options.reference ? 22 : 6, bottom: 6 };
  const plotW = width - labelW - valueW - 8;
  const height = m.top + items.length * row + m.bottom;
  const top = Math.max(options.max || 0, ...items.map((i) => i.value || 0), options.reference ? options.reference.value : 0);
  const max = options.max || niceMax(top);
  const chart = svg("svg", {
    class: "chart bar-chart",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": options.label || "",
  });
  items.forEach((item, i) => {
    const yTop = m.top + i * row;
    const barW = Math.max(0, ((item.value || 0) / max) * plotW);
    const name = svg("text", { class: "bar-label", x: labelW - 6, y: yTop + row / 2 + 4, "text-anchor": "end" }, short(item.label), svg("title", null, item.label));
    chart.appendChild(item.href ? svg("a", { href: item.href }, name) : name);
    chart.appendChild(
      svg(
        "rect",
        { class: `bar ${item.tone ? `bar-${item.tone}` : ""}`, x: labelW, y: yTop + 4, width: barW.toFixed(1), height: row - 8, rx: 2 },
        svg("title", null, `${item.label}：${item.text ?? num(item.value)}`),
      ),
    );
    chart.appendChild(svg("text", { class: "bar-value", x: labelW + barW + 6, y: yTop + row / 2 + 4 }, item.text ?? num(item.value)));
  });
  if (options.reference) {
    const rx = labelW + (options.reference.value / max) * plotW;
    chart.appendChild(svg("line", { class: "reference", x1: rx, x2: rx, y1: 14, y2: height - m.bottom }));
    const anchor = rx > width - 60 ? "end" : "middle";
    chart.appendChild(svg("text", { class: "reference-label", x: rx, y: 11, "text-anchor": anchor }, options.reference.zh));
  }
  return chart;
}
