/**
 * Every room a user is in, invites included, as the homeserver itself sees it: Synapse's admin
 * API lists all rooms and their full state, so a room the user was only invited to (where the
 * client API answers 403 to /members) is counted like any other.
 */
import type { TestClient } from "./matrix-client";

export type Membership = "join" | "invite" | "leave" | "ban" | "knock";

interface AdminRoom {
  room_id: string;
}

interface StateEvent {
  type: string;
  state_key?: string;
  content: { membership?: Membership };
}

const enc = encodeURIComponent;

/** For every room on the homeserver: the membership of each of `userIds` in it (absent: never a member). */
export async function memberships(admin: TestClient, userIds: string[]): Promise<Map<string, Partial<Record<string, Membership>>>> {
  const rooms: AdminRoom[] = [];
  for (let from = 0; ;) {
    const page = await admin.request<{ rooms: AdminRoom[]; next_batch?: number | string }>("GET", `/_synapse/admin/v1/rooms?limit=500&from=${from}`);
    rooms.push(...page.rooms);
    if (page.next_batch === undefined || page.rooms.length === 0) break;
    from = Number(page.next_batch);
  }
  const wanted = new Set(userIds);
  const result = new Map<string, Partial<Record<string, Membership>>>();
  for (const { room_id } of rooms) {
    const { state } = await admin.request<{ state: StateEvent[] }>("GET", `/_synapse/admin/v1/rooms/${enc(room_id)}/state`);
    const found: Partial<Record<string, Membership>> = {};
    for (const e of state) {
      if (e.type === "m.room.member" && e.state_key && wanted.has(e.state_key) && e.content.membership) found[e.state_key] = e.content.membership;
    }
    if (Object.keys(found).length) result.set(room_id, found);
  }
  return result;
}

/** The rooms a user is in right now: joined or invited (sorted). */
export async function roomsOf(admin: TestClient, userId: string): Promise<string[]> {
  const all = await memberships(admin, [userId]);
  return [...all]
    .filter(([, m]) => m[userId] === "join" || m[userId] === "invite")
    .map(([roomId]) => roomId)
    .sort();
}

/** Waits until `userId`'s membership in `roomId` is `membership` (read with the admin API, so it works for rooms the caller left). */
export async function waitForMembership(admin: TestClient, roomId: string, userId: string, membership: Membership, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: Membership | undefined;
  for (;;) {
    const { state } = await admin.request<{ state: StateEvent[] }>("GET", `/_synapse/admin/v1/rooms/${enc(roomId)}/state`);
    last = state.find((e) => e.type === "m.room.member" && e.state_key === userId)?.content.membership;
    if (last === membership) return;
    if (Date.now() > deadline) throw new Error(`${userId} in ${roomId}: membership still ${last ?? "none"} after ${timeoutMs} ms, expected ${membership}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Waits until `userId` is no longer in `roomId` (neither joined nor invited). When every local
 * member left, Synapse drops the room's current state, so "no membership at all" counts as out.
 */
export async function waitUntilOut(admin: TestClient, roomId: string, userId: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { state } = await admin.request<{ state: StateEvent[] }>("GET", `/_synapse/admin/v1/rooms/${enc(roomId)}/state`);
    const membership = state.find((e) => e.type === "m.room.member" && e.state_key === userId)?.content.membership;
    if (membership !== "join" && membership !== "invite") return;
    if (Date.now() > deadline) throw new Error(`${userId} is still ${membership} in ${roomId} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
