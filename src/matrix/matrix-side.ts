import path from "node:path";
import { Bridge, Intent } from "matrix-appservice-bridge";
import { MatrixEvent, MatrixPort, SendOptions } from "../bridge/matrix-port";
import { BridgeConfig } from "../config";
import { markdownToMatrix } from "../convert/formatting";
import { getLogger } from "../logging";
import { LocalMedia, RemoteMedia, RemoteProfile } from "../network/connector";
import { BridgeStore } from "../store";
import { GhostIds } from "./ghost-ids";
import { MatrixMedia } from "./media";

const log = getLogger("matrix");

/** MatrixPort over matrix-appservice-bridge intents: every Matrix write the core asks for. */
export class AppserviceMatrixPort implements MatrixPort {
  readonly botMxid: string;
  readonly serverName: string;
  private readonly ids: GhostIds;
  private readonly media: MatrixMedia;

  constructor(
    private readonly bridge: Bridge,
    private readonly config: BridgeConfig,
    private readonly store: BridgeStore,
    asToken: string,
  ) {
    this.ids = new GhostIds(config);
    this.botMxid = `@${config.appservice.bot.localpart}:${config.homeserver.domain}`;
    this.serverName = config.homeserver.domain;
    this.media = new MatrixMedia({ homeserverUrl: config.homeserver.url, asToken, tempDir: path.join(config.network.media.directory, "tmp-matrix") });
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
    return this.config.appservice.ghosts.displayname_template
      .replace("{name}", name && name.trim() ? name.trim() : remoteUserId)
      .replace("{phone}", remoteUserId);
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
    const { room_id } = await this.intent(ghostMxid).createRoom({ createAsClient: true, options });
    return room_id;
  }

  async join(asMxid: string, roomId: string): Promise<void> {
    await this.intent(asMxid).join(roomId);
  }

  async leave(asMxid: string, roomId: string, reason?: string): Promise<void> {
    await this.intent(asMxid).leave(roomId, reason);
  }

  async send(asMxid: string, roomId: string, content: Record<string, unknown>, opts: SendOptions): Promise<string> {
    const client = this.intent(asMxid).matrixClient;
    const type = opts.type ?? "m.room.message";
    const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/${encodeURIComponent(type)}/${encodeURIComponent(opts.txnId)}`;
    const qs: Record<string, unknown> = {};
    if (opts.ts) qs.ts = opts.ts;
    const result = (await client.doRequest("PUT", path, qs, content)) as { event_id: string };
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

  async notice(asMxid: string, roomId: string, text: string, txnId?: string): Promise<void> {
    const content = { msgtype: "m.notice", body: text };
    if (txnId) await this.send(asMxid, roomId, content, { txnId });
    else await this.intent(asMxid).sendMessage(roomId, content);
  }

  async members(asMxid: string, roomId: string): Promise<string[]> {
    const client = this.intent(asMxid).matrixClient;
    const res = (await client.doRequest("GET", `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/members`)) as { chunk: MatrixEvent[] };
    return res.chunk.filter((e) => ["join", "invite"].includes(String(e.content.membership))).map((e) => e.state_key!);
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

  async botNotice(roomId: string, markdown: string, txnId: string): Promise<void> {
    await this.send(this.botMxid, roomId, { ...markdownToMatrix(markdown), msgtype: "m.notice" }, { txnId });
  }

  downloadMedia(mxc: string, maxBytes: number): Promise<LocalMedia> {
    return this.media.download(mxc, maxBytes);
  }

  mediaMessage(asMxid: string, file: LocalMedia, media: RemoteMedia, caption?: string): Promise<Record<string, unknown>> {
    return this.media.prepareMessage(asMxid, file, media, caption);
  }
}
