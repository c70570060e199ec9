/**
 * The encryption parts of an appservice transaction (MSC2409 to-device events, MSC3202 device
 * lists and key counts), read under the unstable names Synapse 1.160 sends and the stable ones
 * the MSCs will end with, and grouped by the bridged user and device they are for.
 */

export interface DeviceExtensions {
  toDevice: Record<string, unknown>[];
  oneTimeKeyCounts?: Record<string, number>;
  unusedFallbackKeyTypes?: string[];
}

export interface TransactionExtensions {
  /** userId → deviceId → what arrived for that device. */
  devices: Map<string, Map<string, DeviceExtensions>>;
  changed: string[];
  left: string[];
}

type Json = Record<string, unknown>;

function pick<T>(body: Json, ...names: string[]): T | undefined {
  for (const name of names) if (body[name] !== undefined) return body[name] as T;
  return undefined;
}

function entryFor(out: TransactionExtensions, userId: string, deviceId: string): DeviceExtensions {
  let byDevice = out.devices.get(userId);
  if (!byDevice) out.devices.set(userId, (byDevice = new Map()));
  let entry = byDevice.get(deviceId);
  if (!entry) byDevice.set(deviceId, (entry = { toDevice: [] }));
  return entry;
}

/** Reads the extensions of one transaction body; malformed parts are skipped, never thrown. */
export function readTransactionExtensions(body: Json): TransactionExtensions {
  const out: TransactionExtensions = { devices: new Map(), changed: [], left: [] };
  const toDevice = pick<unknown[]>(body, "to_device", "de.sorunome.msc2409.to_device") ?? [];
  for (const raw of Array.isArray(toDevice) ? toDevice : []) {
    if (!raw || typeof raw !== "object") continue;
    const { to_user_id: userId, to_device_id: deviceId, ...event } = raw as Json;
    if (typeof userId !== "string" || typeof deviceId !== "string") continue;
    entryFor(out, userId, deviceId).toDevice.push(event);
  }
  const lists = pick<Json>(body, "device_lists", "org.matrix.msc3202.device_lists");
  if (lists && typeof lists === "object") {
    if (Array.isArray(lists.changed)) out.changed = lists.changed.filter((u): u is string => typeof u === "string");
    if (Array.isArray(lists.left)) out.left = lists.left.filter((u): u is string => typeof u === "string");
  }
  const counts = pick<Json>(body, "device_one_time_keys_count", "org.matrix.msc3202.device_one_time_keys_count", "org.matrix.msc3202.device_one_time_key_counts");
  for (const [userId, byDevice] of Object.entries(counts ?? {})) {
    for (const [deviceId, c] of Object.entries((byDevice ?? {}) as Json)) {
      if (c && typeof c === "object") entryFor(out, userId, deviceId).oneTimeKeyCounts = c as Record<string, number>;
    }
  }
  const fallback = pick<Json>(body, "device_unused_fallback_key_types", "org.matrix.msc3202.device_unused_fallback_key_types");
  for (const [userId, byDevice] of Object.entries(fallback ?? {})) {
    for (const [deviceId, types] of Object.entries((byDevice ?? {}) as Json)) {
      if (Array.isArray(types)) entryFor(out, userId, deviceId).unusedFallbackKeyTypes = types.filter((t): t is string => typeof t === "string");
    }
  }
  return out;
}
