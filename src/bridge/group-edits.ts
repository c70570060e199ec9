/**
 * Matrix → network for a group's membership and metadata: what a Matrix member does to the
 * group's shared room (invites another Matrix user, removes a WhatsApp member's ghost, renames it,
 * sets its topic) is done to the group on the network as that member, when the network allows
 * it. When it does not, the member is told why through the failure model (status.ts `report()`),
 * and the room is put back as the group is: an invite is withdrawn, a removed ghost comes back.
 * What the network then announces (its `group` events) is shown by Portals.applyGroupState.
 */
import { getLogger } from "../logging";
import { NetworkError } from "../network/connector";
import { PortalRow } from "../store";
import { PipelineContext } from "./context";
import { BridgeFailure, EventNoun, FAILURES } from "./failure";
import { MatrixEvent } from "./matrix-port";
import { offNotice } from "./opt-in";

const log = getLogger("group-edits");

/** Room state a group carries: the room's name and topic (a picture set in Matrix is not carried yet: the network wants it public, hosted unencrypted). */
const METADATA = new Set(["m.room.name", "m.room.topic", "m.room.avatar"]);

export class GroupEdits {
  constructor(private readonly ctx: PipelineContext) {}

  /** The group portal of a room, when the event is a Matrix member's own doing there. */
  private groupOf(event: MatrixEvent): (PortalRow & { roomId: string }) | null {
    const portal = this.ctx.store.portals.byRoom(event.room_id);
    if (portal?.kind !== "group" || !portal.roomId) return null;
    if (!this.ctx.portals.isMember(portal, event.sender)) return null;
    return portal as PortalRow & { roomId: string };
  }

  /** Tells the member why their change did not reach the network (once per event, also when it is replayed). */
  private async refuse(portal: PortalRow & { roomId: string }, event: MatrixEvent, failure: BridgeFailure, metric: string): Promise<void> {
    if (!this.ctx.store.outbound.markProcessed(event.event_id)) return;
    this.ctx.metrics.dropped("to_network", metric);
    log.info("a change to a group's room did not reach the network", { portal: portal.id, type: event.type, kind: failure.kind });
    await this.ctx.status.report({ roomId: portal.roomId, eventId: event.event_id, asMxid: this.ctx.matrix.botMxid }, failure);
  }

  /** A member with Third-Party Chats off (or no longer permitted) changes nothing on the network. */
  private async refusedWhileOff(portal: PortalRow & { roomId: string }, event: MatrixEvent): Promise<boolean> {
    const { access, matrix, network } = this.ctx;
    if (access.optedIn(event.sender)) return false;
    const failure = access.mayUse(event.sender) ? FAILURES.third_party_chats_off(offNotice(matrix.botMxid, network.networkName)) : FAILURES.not_permitted();
    await this.refuse(portal, event, failure, "third_party_chats_off");
    return true;
  }

  private refusal(noun: EventNoun, err: unknown): BridgeFailure {
    if (!(err instanceof NetworkError)) throw err;
    return FAILURES.network_refused(noun, err.message);
  }

  /**
   * A member invited a Matrix user who is not in the group into its room: added to the group on
   * the network (the network's `added` event then makes them a member of the portal). Refused
   * (the invitee has Third-Party Chats off: `not_opted_in`; a WhatsApp member has them off:
   * `third_party_disabled`; the inviter is no admin: `forbidden`): the inviter is told why and
   * the invite is withdrawn. Returns false when this is not such an invite.
   */
  async onInvite(event: MatrixEvent): Promise<boolean> {
    const invitee = event.state_key;
    const portal = this.groupOf(event);
    if (!portal || !invitee || this.ctx.portals.isMember(portal, invitee)) return false;
    const { access, network } = this.ctx;
    if (await this.refusedWhileOff(portal, event)) return this.withdrawInvite(portal, invitee);
    if (!access.mayUse(invitee)) {
      await this.refuse(
        portal,
        event,
        FAILURES.network_refused("invitation", `${invitee} may not use this bridge, so they cannot join a ${network.networkName} group`),
        "not_permitted",
      );
      return this.withdrawInvite(portal, invitee);
    }
    // A user new to the bridge starts with the configured default (off unless the operator chose otherwise).
    access.admitUser(invitee);
    try {
      await network.addToGroup(event.sender, portal.remoteChatId, { id: invitee, matrix: true });
    } catch (err) {
      const failure = this.refusal("invitation", err);
      await this.refuse(portal, event, failure, (err as NetworkError).code);
      return this.withdrawInvite(portal, invitee);
    }
    // The invite stands: the network's `added` event finds them invited already.
    log.info("a Matrix member added another Matrix user to a group", { portal: portal.id });
    return true;
  }

  /** The bot takes back an invite the network refused (the room shows the group's members only). */
  private async withdrawInvite(portal: PortalRow & { roomId: string }, invitee: string): Promise<true> {
    await this.ctx.matrix
      .kick(this.ctx.matrix.botMxid, portal.roomId, invitee, `not added to the ${this.ctx.network.networkName} group`)
      .catch((err: Error) => log.warn("could not withdraw a refused invite", { portal: portal.id, error: err.message }));
    return true;
  }

  /**
   * A member removed (kicked or banned) a WhatsApp member's ghost from the room: the member is
   * removed from the group on the network. Refused (only admins may): the ghost comes back and
   * the member is told why. Returns false when this is not such a removal.
   */
  async onGhostRemoved(event: MatrixEvent): Promise<boolean> {
    const ghost = event.state_key;
    const remoteId = ghost ? this.ctx.matrix.remoteIdOfGhost(ghost) : null;
    if (!ghost || !remoteId || event.sender === ghost) return false;
    const portal = this.groupOf(event);
    if (!portal) return false;
    if (!(await this.refusedWhileOff(portal, event))) {
      try {
        await this.ctx.network.removeFromGroup(event.sender, portal.remoteChatId, { id: remoteId, matrix: false });
        log.info("a Matrix member removed a member from a group", { portal: portal.id });
        return true;
      } catch (err) {
        await this.refuse(portal, event, this.refusal("removal", err), (err as NetworkError).code);
      }
    }
    // Still in the group: back in the room.
    await this.ctx.portals.rejoinGhost(portal, ghost);
    return true;
  }

  /**
   * A member renamed the room or changed its topic: the group's name or topic changes on the
   * network (its `name`/`topic` event is not shown again, the room has it). A name the network
   * cannot take (empty), a picture (not carried yet) or a refusal (only admins may): the member
   * is told why. Returns false when the event is not one of these in a group's room.
   */
  async onMetadata(event: MatrixEvent): Promise<boolean> {
    if (!METADATA.has(event.type) || event.state_key !== "") return false;
    const portal = this.groupOf(event);
    if (!portal) return false;
    if (await this.refusedWhileOff(portal, event)) return true;
    const network = this.ctx.network.networkName;
    let update: { name?: string; topic?: string };
    if (event.type === "m.room.name") {
      const name = typeof event.content.name === "string" ? event.content.name.trim() : "";
      if (!name) {
        await this.refuse(portal, event, FAILURES.network_refused("room change", `a ${network} group needs a name, so it keeps its name there`), "group_name_removed");
        return true;
      }
      update = { name };
    } else if (event.type === "m.room.topic") {
      update = { topic: typeof event.content.topic === "string" ? event.content.topic : "" };
    } else {
      await this.refuse(
        portal,
        event,
        FAILURES.unbridgeable_event(`The picture was not changed on ${network}: pictures set here do not reach the group yet.`, "group pictures set in Matrix are not carried yet"),
        "group_picture",
      );
      return true;
    }
    try {
      // The network's event about it is not shown again: Portals.applyGroupState knows it came from the room.
      await this.ctx.network.updateGroup(event.sender, portal.remoteChatId, update);
      log.info("a Matrix member changed a group's metadata", { portal: portal.id, type: event.type });
    } catch (err) {
      await this.refuse(portal, event, this.refusal("room change", err), (err as NetworkError).code);
    }
    return true;
  }
}
