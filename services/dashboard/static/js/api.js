// The query API, called with the session cookie. Every request other than GET carries the CSRF
// header the API requires of cookie-authenticated writes.

import { queryString } from "./dom.js";

export class ApiError extends Error {
  constructor(status, body) {
    const zh = (body && body.title_zh) || "请求失败";
    const en = (body && body.title) || `HTTP ${status}`;
    const detail = body && body.detail ? `：${body.detail}` : "";
    super(`${zh}（${en}）${detail}`);
    this.status = status;
    this.body = body;
  }
}

// Set by the app: what to do when the session has ended (show the login page).
let onUnauthenticated = () => {};

export function whenUnauthenticated(handler) {
  onUnauthenticated = handler;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = new ApiError(response.status, body);
  if (response.status === 401) onUnauthenticated(error);
  return error;
}

export async function get(path, params) {
  const response = await fetch(path + queryString(params), {
    credentials: "same-origin",
    headers: { Accept: "application/json" },
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

export async function send(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: {
      Accept: "application/json",
      "Content-Type": "application/json",
      "X-Liandong-CSRF": "1",
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Sign in with a key: the API answers with the session cookie. False if the key is not valid. */
export async function signIn(key) {
  const response = await fetch("/v1/session", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Liandong-CSRF": "1" },
    body: JSON.stringify({ key }),
  });
  if (response.status === 401 || response.status === 422) return false;
  if (!response.ok) throw await failure(response);
  return true;
}

export async function signOut() {
  await fetch("/v1/session", {
    method: "DELETE",
    credentials: "same-origin",
    headers: { "X-Liandong-CSRF": "1" },
  });
}

/** The whole filtered list as a file (the API's format=csv|xlsx ignores paging). */
export function exportUrl(path, params, format) {
  const { offset, limit, ...rest } = params || {};
  return path + queryString({ ...rest, format });
}
