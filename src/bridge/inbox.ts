import { getLogger } from "../logging";
import { BridgeStore, InboxMode, PortalRow } from "../store";
import { KeyedQueue } from "../util/keyed-queue";
import { MatrixPort } from "./matrix-port";

const log = getLogger("inbox");

export const SPACE_NAME = "Third-Party Chats";
const spaceTopic = (network: string) => `Your chats with ${network} users. Say \`inbox unified\` to the bridge bot to go back to one list.`;

export interface InboxChange {
  mode: InboxMode;
  /** False when the user already had this inbox. */
  changed: boolean;
  spaceRoomId: string | null;
  /** Portals linked into (dedicated) or out of (unified) the Space. */
  portals: number;
}

/**
 * A user's inbox: "unified" leaves third-party chats among their other rooms; "dedicated" puts
 * them in a personal Space owned by the bot. The Space lists each portal with m.space.child (set
 * by the bot in the Space) and each DM's portal points back with m.space.parent (set by the ghost,
 * who has power in the portal), as the spec's Spaces section describes. A group's room, shared by
 * its Matrix members, is a child of each member's Space and names no parent (it would be one per
 * member). One change at a time per user.
 */
export class InboxManager {
  private readonly locks = new KeyedQueue();

  constructor(
    private readonly store: BridgeStore,
    private readonly matrix: MatrixPort,
    /** The network's name as users know it, for the Space's topic. */
    private readonly networkName: string,
    /** The ghost that speaks for the bridge in a portal (portals.ts decides, by the kind of chat). */
    private readonly ghostOf: (portal: PortalRow) => string,
  ) {}

  setMode(mxid: string, mode: InboxMode): Promise<InboxChange> {
    return this.locks.run(mxid, async () => {
      const user = this.store.users.get(mxid);
      if (!user) throw new Error(`unknown user ${mxid}`);
      const portals = this.portalsOf(mxid);
      if (mode === "dedicated") {
        const changed = user.inboxMode !== "dedicated" || !user.spaceRoomId;
        let space = user.spaceRoomId;
        if (!space) {
          space = await this.matrix.createSpace(SPACE_NAME, spaceTopic(this.networkName), mxid);
          log.info("created a Third-Party Chats space", { user: mxid, space });
        }
        this.store.users.setInbox(mxid, "dedicated", space);
        for (const portal of portals) await this.link(space, portal);
        return { mode, changed, spaceRoomId: space, portals: portals.length };
      }
      const space = user.spaceRoomId;
      if (space) {
        for (const portal of portals) await this.unlink(space, portal);
        await this.matrix
          .kick(this.matrix.botMxid, space, mxid, "You switched to the unified inbox")
          .catch((err: Error) => log.debug("could not remove the user from the space", { error: err.message }));
        await this.matrix.leave(this.matrix.botMxid, space, "unified inbox").catch((err: Error) => log.debug("could not leave the space", { error: err.message }));
      }
      this.store.users.setInbox(mxid, "unified", null);
      return { mode, changed: user.inboxMode !== "unified" || space !== null, spaceRoomId: null, portals: space ? portals.length : 0 };
    });
  }

  /** A DM's portal got its room, or a Matrix user (`member`) joined a group's: listed in the user's Space if they have one. */
  async portalAdded(portal: PortalRow & { roomId: string }, member?: string): Promise<void> {
    const receiver = portal.kind === "group" ? member : portal.receiver;
    if (!receiver) return;
    return this.locks.run(receiver, async () => {
      const space = this.spaceOf(receiver);
      if (space) await this.link(space, portal);
    });
  }

  /** A portal is going away (call before its ghost leaves the room), or a Matrix user (`member`) is no longer in a group's. */
  async portalRemoved(portal: PortalRow, member?: string): Promise<void> {
    const receiver = portal.kind === "group" ? member : portal.receiver;
    if (!receiver) return;
    return this.locks.run(receiver, async () => {
      const space = this.spaceOf(receiver);
      if (space && portal.roomId) await this.unlink(space, portal);
    });
  }

  /** The user left their Space: back to the unified inbox, and the bot leaves it too. */
  spaceLeft(mxid: string, spaceRoomId: string): Promise<boolean> {
    return this.locks.run(mxid, async () => {
      const user = this.store.users.get(mxid);
      if (user?.spaceRoomId !== spaceRoomId) return false;
      this.store.users.setInbox(mxid, "unified", null);
      for (const portal of this.portalsOf(mxid)) await this.unlinkParent(spaceRoomId, portal);
      await this.matrix.leave(this.matrix.botMxid, spaceRoomId, "the user left the space").catch(() => undefined);
      log.info("user left their space; inbox is unified again", { user: mxid });
      return true;
    });
  }

  private spaceOf(mxid: string): string | null {
    const user = this.store.users.get(mxid);
    return user?.inboxMode === "dedicated" ? user.spaceRoomId : null;
  }

  private portalsOf(mxid: string): (PortalRow & { roomId: string })[] {
    return [...this.store.portals.forReceiver(mxid), ...this.store.portals.groupsOf(mxid)].filter((p): p is PortalRow & { roomId: string } => p.roomId !== null);
  }

  private async link(space: string, portal: PortalRow & { roomId: string }): Promise<void> {
    const via = [this.matrix.serverName];
    await this.matrix.setState(this.matrix.botMxid, space, "m.space.child", portal.roomId, { via });
    if (portal.kind === "group") return;
    // A room the user created gives the ghost no power to set state: the child link alone still lists it.
    await this.matrix
      .setState(this.ghostOf(portal), portal.roomId, "m.space.parent", space, { via, canonical: true })
      .catch((err: Error) => log.debug("could not set the portal's space parent", { room: portal.roomId, error: err.message }));
  }

  private async unlink(space: string, portal: PortalRow & { roomId: string | null }): Promise<void> {
    if (!portal.roomId) return;
    // An m.space.child / m.space.parent without `via` is no link (spec: Spaces).
    await this.matrix
      .setState(this.matrix.botMxid, space, "m.space.child", portal.roomId, {})
      .catch((err: Error) => log.debug("could not remove a space child", { room: portal.roomId, error: err.message }));
    await this.unlinkParent(space, portal);
  }

  private async unlinkParent(space: string, portal: PortalRow): Promise<void> {
    if (!portal.roomId || portal.kind === "group") return;
    await this.matrix
      .setState(this.ghostOf(portal), portal.roomId, "m.space.parent", space, {})
      .catch((err: Error) => log.debug("could not remove the portal's space parent", { room: portal.roomId, error: err.message }));
  }
}
