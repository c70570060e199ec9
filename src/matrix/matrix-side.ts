import { Bridge, Intent } from "matrix-appservice-bridge";
import { MatrixEvent, MatrixPort, SendOptions } from "../bridge/matrix-port";
import { BridgeConfig } from "../config";
import { getLogger } from "../logging";
import { RemoteProfile } from "../network/connector";
import { BridgeStore } from "../store";
import { GhostIds } from "./ghost-ids";

const log = getLogger("matrix");

/** MatrixPort over matrix-appservice-bridge intents: every Matrix write the core asks for. */
export class AppserviceMatrixPort implements MatrixPort {
  readonly botMxid: string;
  private readonly ids: GhostIds;

  constructor(
    private readonly bridge: Bridge,
    private readonly config: BridgeConfig,
    private readonly store: BridgeStore,
  ) {
    this.ids = new GhostIds(config);
    this.botMxid = `@${config.appservice.bot.localpart}:${config.homeserver.domain}`;
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
    // The bot's client sends as the ghost (appservice identity assertion, user_id): a ghost that
    // only sends needs no Intent, which the libraries would each keep in memory for up to an hour.
    const client = this.intent(this.botMxid).matrixClient;
    const type = opts.type ?? "m.room.message";
    const path = `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/${encodeURIComponent(type)}/${encodeURIComponent(opts.txnId)}`;
    const qs: Record<string, unknown> = { user_id: asMxid };
    if (opts.ts) qs.ts = opts.ts;
    const result = (await client.doRequest("PUT", path, qs, content)) as { event_id: string };
    return result.event_id;
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
}
