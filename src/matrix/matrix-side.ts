import { randomBytes } from "node:crypto";
import path from "node:path";
import { Bridge, Intent } from "matrix-appservice-bridge";
import { MatrixEvent, MatrixPort, SendOptions } from "../bridge/matrix-port";
import { BridgeConfig } from "../config";
import { markdownToMatrix } from "../convert/formatting";
import { getLogger } from "../logging";
import { AttachmentKeys, LocalMedia, RemoteMedia, RemoteProfile } from "../network/connector";
import { BridgeStore } from "../store";
import { LinkSnapshot } from "../bridge/link-health";
import { GhostIds } from "./ghost-ids";
import { HomeserverLink, isAmbiguousFailure } from "./homeserver-link";
import type { HomeserverRequestCounter } from "./homeserver-requests";
import { MatrixMedia } from "./media";
import { RoomEncryption } from "./room-encryption";

const log = getLogger("matrix");

/** How many of the sender's newest events in a room are searched for an interrupted send. */
const RECOVERY_SEARCH_DEPTH = 50;
const CLOCK_SKEW_MS = 5 * 60_000;

/** JSON with object keys sorted, so equal contents compare equal whatever their key order. */
function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v,
  );
}

/** MatrixPort over matrix-appservice-bridge intents: every Matrix write the core asks for. */
export class AppserviceMatrixPort implements MatrixPort {
  readonly botMxid: string;
  /** Requests that cannot reach the homeserver wait for it (installed by the appservice). */
  readonly homeserver: HomeserverLink;
  readonly serverName: string;
  private readonly ids: GhostIds;
  private readonly media: MatrixMedia;
  /** End-to-bridge encryption (set by the appservice when encryption.allow is on). */
  encryption?: RoomEncryption;

  constructor(
    private readonly bridge: Bridge,
    private readonly config: BridgeConfig,
    private readonly store: BridgeStore,
    asToken: string,
    /** Where every request to the homeserver is counted (the bridge's metrics). */
    counter?: HomeserverRequestCounter,
  ) {
    this.ids = new GhostIds(config);
    this.homeserver = new HomeserverLink(config.homeserver.url.replace(/\/+$/, ""), undefined, counter);
    this.botMxid = `@${config.appservice.bot.localpart}:${config.homeserver.domain}`;
    this.serverName = config.homeserver.domain;
    this.media = new MatrixMedia({ homeserverUrl: config.homeserver.url, asToken, homeserver: this.homeserver, tempDir: path.join(config.network.media.directory, "tmp-matrix") });
  }

  ghostMxid(remoteUserId: string): string {
    return this.ids.mxidFor(remoteUserId);
  }

  remoteIdOfGhost(mxid: string): string | null {
    return this.ids.remoteIdOf(mxid);
  }

  private intent(mxid: string): Intent {
    return this.bridge.getIntent(mxid);
  }

  displayNameFor(remoteUserId: string, name: string | null): string {
    return this.config.appservice.ghosts.displayname_template.replace("{name}", name && name.trim() ? name.trim() : remoteUserId).replace("{phone}", remoteUserId);
  }

  async ensureGhost(remoteUserId: string, profile: RemoteProfile | null): Promise<string> {
    const mxid = this.ids.mxidFor(remoteUserId);
    let ghost = this.store.ghosts.ensure(remoteUserId, mxid);
    const intent = this.intent(mxid);
    if (!ghost.registered) {
      await intent.ensureRegistered();
      this.store.ghosts.markRegistered(remoteUserId);
      ghost = { ...ghost, registered: true };
    }
    // Its device (and cross-signing identity) before any room the ghost makes: members' clients share keys with the devices they find.
    if (this.encryption?.enabled) await this.encryption.manager.machineFor(mxid);
    const wantedName = this.displayNameFor(remoteUserId, profile?.displayName ?? null);
    if (ghost.displayName !== wantedName && (profile || !ghost.displayName)) {
      await intent.setDisplayName(wantedName);
      this.store.ghosts.setDisplayName(remoteUserId, wantedName);
      log.debug("ghost display name set", { ghost: mxid });
    }
    if (profile && (profile.avatar?.id ?? null) !== ghost.avatarId) {
      if (profile.avatar) {
        const data = await profile.avatar.fetch();
        const mxc = await intent.uploadContent(data, { name: "avatar", type: profile.avatar.mimetype });
        await intent.setAvatarUrl(mxc);
        this.store.ghosts.setAvatar(remoteUserId, profile.avatar.id, mxc);
      } else {
        await intent.setAvatarUrl("");
        this.store.ghosts.setAvatar(remoteUserId, null, null);
      }
      log.debug("ghost avatar updated", { ghost: mxid });
    }
    return mxid;
  }

  async createDm(ghostMxid: string, invitee: string, name: string | null): Promise<string> {
    const options: Record<string, unknown> = {
      preset: "trusted_private_chat",
      is_direct: true,
      invite: [invitee],
      visibility: "private",
      // The user gets the same power as the ghost, as in a DM both started.
      power_level_content_override: { users: { [ghostMxid]: 100, [invitee]: 100 } },
    };
    if (name) options.name = name;
    const encrypted = this.encryption?.byDefault ?? false;
    if (encrypted) options.initial_state = [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }];
    const { room_id } = await this.intent(ghostMxid).createRoom({ createAsClient: true, options });
    if (encrypted) this.encryption!.markEncrypted(room_id);
    return room_id;
  }

  async createGroupRoom(name: string, topic: string | null, powerLevels: Record<string, number>): Promise<string> {
    const options: Record<string, unknown> = {
      name,
      preset: "private_chat",
      visibility: "private",
      power_level_content_override: { users: { ...powerLevels, [this.botMxid]: 100 } },
    };
    if (topic) options.topic = topic;
    // Like a DM: encrypted from the start when the bridge encrypts new portals.
    const encrypted = this.encryption?.byDefault ?? false;
    if (encrypted) options.initial_state = [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }];
    const { room_id } = await this.intent(this.botMxid).createRoom({ createAsClient: true, options });
    if (encrypted) this.encryption!.markEncrypted(room_id);
    return room_id;
  }

  async invite(asMxid: string, roomId: string, userId: string): Promise<void> {
    await this.intent(asMxid).invite(roomId, userId);
  }

  async join(asMxid: string, roomId: string): Promise<void> {
    await this.intent(asMxid).join(roomId);
  }

  async leave(asMxid: string, roomId: string, reason?: string): Promise<void> {
    await this.intent(asMxid).leave(roomId, reason);
  }

  /**
   * Sends once per (room, txnId), across crashes: the send is recorded before the request and
   * its event id after. A send recorded without an event id may have reached the homeserver,
   * which forgets appservice transaction ids when it restarts, so the room is searched first.
   */
  async send(asMxid: string, roomId: string, content: Record<string, unknown>, opts: SendOptions): Promise<string> {
    for (;;) {
      try {
        return await this.sendOnce(asMxid, roomId, content, opts);
      } catch (err) {
        // The homeserver went away mid-request: whether it stored the event is found out by the next attempt's search.
        if (!isAmbiguousFailure(err)) throw err;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  health(): LinkSnapshot {
    return this.homeserver.health.snapshot();
  }

  private async sendOnce(asMxid: string, roomId: string, content: Record<string, unknown>, opts: SendOptions): Promise<string> {
    const type = opts.type ?? "m.room.message";
    const earlier = this.store.matrixSends.get(roomId, opts.txnId);
    if (earlier?.eventId) return earlier.eventId;
    if (earlier) {
      const found = await this.findEarlierSend(asMxid, roomId, type, content, opts.ts, earlier.startedAt);
      if (found) {
        this.store.matrixSends.finish(roomId, opts.txnId, found);
        log.info("an interrupted send had reached the room; not sending it again", { room: roomId, eventId: found });
        return found;
      }
    } else {
      this.store.matrixSends.begin(roomId, opts.txnId, asMxid);
    }
    // Through the sender's own client: the bot's client may be set to assert the bot's identity,
    // which overrides a user_id given here and would send a ghost's message as the bot.
    const client = this.intent(asMxid).matrixClient;
    // In an encrypted room the event goes out as m.room.encrypted, encrypted by the sender's own device.
    const wire = this.encryption ? await this.encryption.outgoing(roomId, asMxid, type, content) : { type, content };
    const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/${encodeURIComponent(wire.type)}/${encodeURIComponent(opts.txnId)}`;
    const qs: Record<string, unknown> = {};
    if (opts.ts) qs.ts = opts.ts;
    const result = (await client.doRequest("PUT", path, qs, wire.content)) as { event_id: string };
    this.store.matrixSends.finish(roomId, opts.txnId, result.event_id);
    return result.event_id;
  }

  async redact(asMxid: string, roomId: string, eventId: string, opts: { txnId: string; reason?: string }): Promise<void> {
    const client = this.intent(asMxid).matrixClient;
    const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/redact/${encodeURIComponent(eventId)}/${encodeURIComponent(opts.txnId)}`;
    await client.doRequest("PUT", path, null, opts.reason ? { reason: opts.reason } : {});
  }

  // The client directly, not intent.sendTyping/sendReadReceipt: those check membership first
  // (an extra request for a ghost that is in the room) and typing would get a fixed 30 s timeout.
  async setTyping(asMxid: string, roomId: string, typing: boolean, timeoutMs: number): Promise<void> {
    await this.intent(asMxid).matrixClient.setTyping(roomId, typing, timeoutMs);
  }

  async sendReadReceipt(asMxid: string, roomId: string, eventId: string): Promise<void> {
    await this.intent(asMxid).matrixClient.sendReadReceipt(roomId, eventId);
  }

  /** The event an interrupted send created, if it is among the sender's recent events in the room. */
  private async findEarlierSend(asMxid: string, roomId: string, type: string, content: Record<string, unknown>, ts: number | undefined, startedAt: number): Promise<string | null> {
    const encryption = this.encryption && (await this.encryption.isEncrypted(roomId, asMxid)) ? this.encryption : undefined;
    const filter = JSON.stringify({ senders: [asMxid], types: encryption ? [type, "m.room.encrypted"] : [type] });
    let chunk: MatrixEvent[];
    try {
      const res = (await this.intent(asMxid).matrixClient.doRequest("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages`, {
        dir: "b",
        limit: RECOVERY_SEARCH_DEPTH,
        filter,
      })) as { chunk: MatrixEvent[] };
      chunk = res.chunk;
    } catch (err) {
      log.warn("could not search the room for an interrupted send; sending it again", { room: roomId, error: (err as Error).message });
      return null;
    }
    if (encryption) chunk = await Promise.all(chunk.map((e) => this.readable(encryption, asMxid, { ...e, room_id: roomId })));
    const wanted = canonicalJson(content);
    const match = chunk.find(
      (e) =>
        e.sender === asMxid &&
        e.type === type &&
        // A massaged timestamp is exact; otherwise the event cannot be older than the first attempt (minus clock skew).
        (ts ? e.origin_server_ts === ts : e.origin_server_ts >= startedAt - CLOCK_SKEW_MS) &&
        canonicalJson(e.content) === wanted &&
        // An equal message sent just before (same text, same millisecond) is another send's event.
        !this.store.matrixSends.hasEvent(roomId, e.event_id) &&
        !this.store.messages.byEventId(e.event_id),
    );
    return match?.event_id ?? null;
  }

  /**
   * An encrypted event of the bridge's own user as it was before encryption (the sender's device
   * keeps its own room keys), for comparing contents; left as it is when it does not decrypt.
   */
  private async readable(encryption: RoomEncryption, asMxid: string, e: MatrixEvent): Promise<MatrixEvent> {
    if (e.type !== "m.room.encrypted") return e;
    try {
      const clear = await encryption.decrypt(e as unknown as Record<string, unknown> & { room_id: string }, asMxid, 0);
      return { ...e, type: clear.type, content: withClearRelation(clear.content, e.content) };
    } catch {
      return e;
    }
  }

  async notice(asMxid: string, roomId: string, text: string, txnId?: string, replyTo?: string): Promise<void> {
    // A reply also keeps two equal notices sent in the same millisecond apart (identical events would be one event).
    const content = { msgtype: "m.notice", body: text, ...(replyTo ? { "m.relates_to": { "m.in_reply_to": { event_id: replyTo } } } : {}) };
    // Through send() even without a transaction id of the caller's: it encrypts in encrypted rooms.
    await this.send(asMxid, roomId, content, { txnId: txnId ?? `notice.${Date.now()}.${randomBytes(6).toString("hex")}` });
  }

  /** The room's m.room.encryption content as asMxid reads it, or null when the room is not encrypted. */
  async encryptionState(asMxid: string, roomId: string): Promise<Record<string, unknown> | null> {
    try {
      return (await this.intent(asMxid).matrixClient.getRoomStateEvent(roomId, "m.room.encryption", "")) as Record<string, unknown>;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return null;
      throw err;
    }
  }

  async members(asMxid: string, roomId: string): Promise<string[]> {
    const client = this.intent(asMxid).matrixClient;
    const res = (await client.doRequest("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/members`)) as { chunk: MatrixEvent[] };
    return res.chunk.filter((e) => ["join", "invite"].includes(String(e.content.membership))).map((e) => e.state_key!);
  }

  async memberships(asMxid: string, roomId: string): Promise<Map<string, string>> {
    const client = this.intent(asMxid).matrixClient;
    const res = (await client.doRequest("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/members`)) as { chunk: MatrixEvent[] };
    return new Map(res.chunk.map((e) => [e.state_key!, String(e.content.membership)]));
  }

  async roomName(asMxid: string, roomId: string): Promise<string | null> {
    const client = this.intent(asMxid).matrixClient;
    try {
      const content = (await client.doRequest("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/state/m.room.name/`)) as { name?: unknown };
      return typeof content.name === "string" && content.name.trim() ? content.name.trim() : null;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return null;
      throw err;
    }
  }

  async joinedRooms(asMxid: string): Promise<string[]> {
    const res = (await this.intent(asMxid).matrixClient.doRequest("GET", "/_matrix/client/v3/joined_rooms")) as { joined_rooms: string[] };
    return res.joined_rooms;
  }

  async recentEvents(asMxid: string, roomId: string, limit: number): Promise<MatrixEvent[]> {
    const client = this.intent(asMxid).matrixClient;
    const res = (await client.doRequest("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages`, { dir: "b", limit })) as {
      chunk: MatrixEvent[];
    };
    return res.chunk.map((e) => ({ ...e, room_id: roomId })).reverse();
  }

  roomLink(roomId: string): string {
    return `https://matrix.to/#/${roomId}`;
  }

  async createSpace(name: string, topic: string, invitee: string): Promise<string> {
    const options: Record<string, unknown> = {
      name,
      topic,
      preset: "private_chat",
      visibility: "private",
      invite: [invitee],
      creation_content: { type: "m.space" },
      // The bot keeps the list; the user reads it (a Space has no conversation of its own).
      power_level_content_override: { users: { [this.botMxid]: 100 }, events_default: 100 },
    };
    const { room_id } = await this.intent(this.botMxid).createRoom({ createAsClient: true, options });
    return room_id;
  }

  async setState(asMxid: string, roomId: string, type: string, stateKey: string, content: Record<string, unknown>): Promise<void> {
    await this.intent(asMxid).sendStateEvent(roomId, type, stateKey, content);
  }

  async kick(asMxid: string, roomId: string, userId: string, reason?: string): Promise<void> {
    await this.intent(asMxid).kick(roomId, userId, reason);
  }

  async setRoomAvatar(asMxid: string, roomId: string, picture: { data: Buffer; mimetype: string } | null): Promise<void> {
    const intent = this.intent(asMxid);
    // No url: the room has no avatar (the spec's m.room.avatar with the url left out).
    const content = picture
      ? { url: await intent.uploadContent(picture.data, { name: "picture", type: picture.mimetype }), info: { mimetype: picture.mimetype, size: picture.data.length } }
      : {};
    await intent.sendStateEvent(roomId, "m.room.avatar", "", content);
  }

  async botNotice(roomId: string, markdown: string, txnId: string): Promise<void> {
    await this.send(this.botMxid, roomId, { ...markdownToMatrix(markdown), msgtype: "m.notice" }, { txnId });
  }

  downloadMedia(mxc: string, maxBytes: number, encryption?: AttachmentKeys): Promise<LocalMedia> {
    return this.media.download(mxc, maxBytes, encryption);
  }

  async mediaMessage(asMxid: string, roomId: string, file: LocalMedia, media: RemoteMedia, caption?: string): Promise<Record<string, unknown>> {
    const encrypted = this.encryption ? await this.encryption.isEncrypted(roomId, asMxid) : false;
    return this.media.prepareMessage(asMxid, file, media, caption, encrypted);
  }
}

/** A decrypted event's content with the relation of its encrypted form, which the spec leaves readable and authoritative. */
export function withClearRelation(clear: Record<string, unknown>, encrypted: Record<string, unknown>): Record<string, unknown> {
  const relation = encrypted["m.relates_to"];
  return relation === undefined ? clear : { ...clear, "m.relates_to": relation };
}
