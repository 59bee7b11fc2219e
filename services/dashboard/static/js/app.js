// The dashboard's shell: sign-in, the session, hash routing, and live updates from /v1/live.

import * as api from "./api.js";
import { drawCharts } from "./charts.js";
import { errorBox, errorPage } from "./components.js";
import { clear, h, queryString } from "./dom.js";
import { loadLabels, roleName } from "./labels.js";
import casePage from "./pages/case.js";
import coordination from "./pages/coordination.js";
import disputes from "./pages/disputes.js";
import inbox from "./pages/inbox.js";
import matterPage from "./pages/matter.js";
import overview from "./pages/overview.js";
import publications from "./pages/publications.js";
import { forgetScope } from "./pages/shared.js";
import township from "./pages/township.js";

const ROUTES = [
  { pattern: /^\/$/, page: overview, nav: "overview" },
  { pattern: /^\/township\/([^/]+)$/, page: township, nav: "overview" },
  { pattern: /^\/case\/(.+)$/, page: casePage, nav: "overview" },
  { pattern: /^\/matter\/([^/]+)\/(.+)$/, page: matterPage, nav: "coordination" },
  { pattern: /^\/coordination$/, page: coordination, nav: "coordination" },
  { pattern: /^\/inbox$/, page: inbox, nav: "inbox" },
  { pattern: /^\/disputes$/, page: disputes, nav: "disputes" },
  { pattern: /^\/publications$/, page: publications, nav: "publications" },
];

const REFRESH_DEBOUNCE_MS = 1000;
const LIVE_RETRY_MS = 10000;

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
const nav = document.getElementById("nav");
const menuToggle = document.getElementById("menu-toggle");
const liveBadge = document.getElementById("live");
const liveText = document.getElementById("live-text");

const state = {
  me: null,
  renderSeq: 0,
  paused: 0,
  pendingRefresh: false,
  refreshTimer: null,
  live: null,
  liveRetry: null,
  version: null,
};

function parseHash() {
  const raw = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const [path, search = ""] = raw.split("?");
  return { path: path || "/", query: Object.fromEntries(new URLSearchParams(search)) };
}

function navigate(path, query) {
  location.hash = path + queryString(query);
}

/** Replace some of the current page's query values (filters, offset) and show the result. */
function setQuery(changes) {
  const { path, query } = parseHash();
  navigate(path, { ...query, ...changes });
}

function toast(message, tone) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.dataset.tone = tone || "ok";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => {
    box.hidden = true;
  }, 6000);
}

// A page holds live refreshes while someone fills in a form, so the form is not redrawn under them.
function pause() {
  state.paused += 1;
  return () => {
    state.paused = Math.max(0, state.paused - 1);
    if (state.paused === 0 && state.pendingRefresh) scheduleRefresh();
  };
}

const app = {
  get me() {
    return state.me;
  },
  navigate,
  setQuery,
  toast,
  pause,
  refresh: () => render(true),
};

async function render(keepScroll) {
  const seq = ++state.renderSeq;
  const { path, query } = parseHash();
  const route = ROUTES.find((r) => r.pattern.test(path));
  nav.classList.remove("open");
  menuToggle.setAttribute("aria-expanded", "false");
  for (const link of nav.querySelectorAll("a")) {
    link.toggleAttribute("aria-current", route && link.dataset.nav === route.nav);
  }
  main.dataset.state = "loading";
  let node;
  if (!route) {
    node = h("div", null, h("h1", null, "页面不存在 ", h("small", { class: "en" }, "Not found")), h("p", null, h("a", { href: "#/" }, "返回总览")));
  } else {
    const params = path.match(route.pattern).slice(1);
    try {
      node = await route.page({ params, query, path }, app);
    } catch (error) {
      node = errorPage(error);
    }
  }
  if (seq !== state.renderSeq || state.me === null) return; // a newer render or a sign-out won
  const scroll = window.scrollY;
  clear(main);
  main.appendChild(node);
  drawCharts(main);
  const title = main.querySelector("h1");
  document.title = `${title ? title.firstChild.textContent.trim() : "看板"} · 联动`;
  window.scrollTo(0, keepScroll ? scroll : 0);
  main.dataset.state = "ready";
  main.dataset.renders = String(Number(main.dataset.renders || 0) + 1);
}

function scheduleRefresh() {
  state.pendingRefresh = true;
  if (state.paused > 0) return;
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(() => {
    if (state.paused > 0 || state.me === null) return;
    state.pendingRefresh = false;
    render(true);
  }, REFRESH_DEBOUNCE_MS);
}

function setLive(mode) {
  liveBadge.dataset.state = mode;
  liveText.textContent = mode === "on" ? "实时" : mode === "connecting" ? "连接中" : "离线";
  liveBadge.title = mode === "on" ? "实时更新已连接 Live" : "实时更新未连接 Offline";
}

function startLive() {
  stopLive();
  setLive("connecting");
  const source = new EventSource("/v1/live");
  state.live = source;
  // `ready` carries the store's version on every (re)connection, `change` each new one: a version
  // not seen before means the page may show stale figures.
  const seen = (event) => {
    let version = null;
    try {
      version = JSON.parse(event.data).version;
    } catch {
      version = null;
    }
    setLive("on");
    if (version !== null && version === state.version) return;
    const first = state.version === null;
    state.version = version;
    if (!first || event.type === "change") scheduleRefresh();
  };
  source.addEventListener("open", () => setLive("on"));
  source.addEventListener("ready", seen);
  source.addEventListener("change", seen);
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused outright (signed out, or a hub without /v1/live): try again later.
      setLive("off");
      state.liveRetry = setTimeout(() => {
        if (state.me !== null) startLive();
      }, LIVE_RETRY_MS);
    } else {
      setLive("connecting");
    }
  });
}

function stopLive() {
  clearTimeout(state.liveRetry);
  if (state.live) state.live.close();
  state.live = null;
  setLive("off");
}

function showWho(me) {
  const who = document.getElementById("who");
  clear(who);
  who.title = me.unit;
  who.append(h("span", { class: "who-name" }, me.name_zh), h("span", { class: `badge badge-role role-${me.role}` }, roleName(me.role)));
}

function showLogin(message) {
  state.me = null;
  state.version = null;
  forgetScope();
  state.renderSeq += 1;
  stopLive();
  topbar.hidden = true;
  clear(main);
  main.dataset.state = "login";
  const input = h("input", {
    type: "password",
    name: "key",
    id: "key",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "ld_…",
  });
  const error = h("p", { class: "error", role: "alert", hidden: !message }, message || "");
  const button = h("button", { type: "submit", class: "primary" }, "登录 ", h("small", null, "Sign in"));
  const form = h(
    "form",
    { class: "login-form" },
    h("label", { for: "key" }, "API 密钥 ", h("small", { class: "en" }, "API key")),
    input,
    button,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    error.hidden = true;
    try {
      if (await api.signIn(input.value.trim())) {
        await start();
        return;
      }
      error.textContent = "密钥无效或已吊销 Invalid or revoked key";
    } catch (failure) {
      error.textContent = failure.message;
    }
    error.hidden = false;
    button.disabled = false;
  });
  main.appendChild(
    h(
      "div",
      { class: "login" },
      h("h1", null, "执法监督看板 ", h("small", { class: "en" }, "Liandong enforcement dashboard")),
      h("p", { class: "lead" }, "请粘贴本单位的 API 密钥登录。", h("small", { class: "en" }, "Paste your unit's API key to sign in.")),
      form,
      h(
        "p",
        { class: "hint" },
        "密钥由管理员以 ",
        h("code", null, "liandong keys issue 单位编号"),
        " 签发；登录后会话保存在本浏览器的 Cookie 中。",
      ),
    ),
  );
  input.focus();
}

async function start() {
  let me;
  try {
    me = await api.get("/v1/me");
  } catch (error) {
    if (error.status === 401) {
      showLogin();
    } else {
      clear(main);
      main.appendChild(errorBox(error));
    }
    return;
  }
  state.me = me;
  showWho(me);
  topbar.hidden = false;
  startLive();
  await render(false);
}

/** `#login=KEY` (printed by `liandong up --demo`): sign in once, then drop the key from the address. */
async function signInFromAddress() {
  const match = location.hash.match(/^#login=([^&]+)$/);
  if (!match) return null;
  history.replaceState(null, "", `${location.pathname}#/`);
  try {
    return (await api.signIn(decodeURIComponent(match[1]))) ? null : "登录链接中的密钥无效 The key in the link is not valid";
  } catch (error) {
    return error.message;
  }
}

async function boot() {
  api.whenUnauthenticated(() => {
    if (state.me !== null) showLogin("会话已结束，请重新登录 Session ended, please sign in again");
  });
  menuToggle.addEventListener("click", () => {
    const open = nav.classList.toggle("open");
    menuToggle.setAttribute("aria-expanded", String(open));
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await api.signOut();
    showLogin("已退出 Signed out");
  });
  window.addEventListener("hashchange", () => {
    if (state.me !== null) render(false);
  });
  let resizeTimer = null;
  let lastWidth = window.innerWidth;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      // Charts are drawn for the width they get: redraw when it changes, not on a phone's scroll.
      if (Math.abs(window.innerWidth - lastWidth) > 20) {
        lastWidth = window.innerWidth;
        drawCharts(main);
      }
    }, 300);
  });
  await loadLabels();
  const linkError = await signInFromAddress();
  if (linkError) {
    showLogin(linkError);
    return;
  }
  await start();
}

boot();
