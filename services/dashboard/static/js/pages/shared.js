// Pieces the list pages share: the township filter of the viewer's scope, status badges.

import * as api from "../api.js";
import { badge } from "../dom.js";

let townshipsInScope = null;

/** The townships this viewer may see, as [code, name] for a filter (the API decides the scope). */
export async function scopeTownships() {
  if (townshipsInScope === null) {
    const body = await api.get("/v1/townships");
    const items = Array.isArray(body) ? body : body.items || [];
    townshipsInScope = items.map((t) => [t.township, t.name_zh]);
  }
  return townshipsInScope;
}

/** Forget the scope, on sign-out: the next viewer may see other townships. */
export function forgetScope() {
  townshipsInScope = null;
}

export function statusBadge(status, names) {
  const entry = names[status];
  return entry ? badge(entry[0], entry[1]) : badge(status || "—", "plain");
}
