import { Database, openDatabase } from "./database";
import { GhostStore } from "./ghosts";
import { JournalStore } from "./journal";
import { MatrixSendStore } from "./matrix-sends";
import { HostedMediaStore } from "./hosted-media";
import { InboundStore } from "./inbound";
import { MessageStore } from "./messages";
import { OutboundStore } from "./outbound";
import { PortalStore } from "./portals";
import { ReactionStore } from "./reactions";
import { ReadMarkerStore } from "./read-markers";
import { SentFrameStore } from "./sent-frames";
import { SignalRecordTable } from "./signal-records";
import { UserStore } from "./users";

export { DatabaseError, openDatabase, migrate, schemaVersion } from "./database";
export type { Database } from "./database";
export type { MatrixUserRow, InboxMode, RefusedContact, ErasedUserData } from "./users";
export type { GhostRow } from "./ghosts";
export type { PortalRow, PortalKind } from "./portals";
export type { MessageRow } from "./messages";
export type { OutboundItem } from "./outbound";
export type { InboundItem, InboundKind } from "./inbound";
export type { JournalEntry, JournalKind } from "./journal";
export type { MatrixSendRow } from "./matrix-sends";
export type { ReactionRow } from "./reactions";
export type { HostedMediaRow } from "./hosted-media";

/** Everything the bridge persists, one object per concern over one SQLite database. */
export class BridgeStore {
  readonly users: UserStore;
  readonly ghosts: GhostStore;
  readonly portals: PortalStore;
  readonly messages: MessageStore;
  readonly outbound: OutboundStore;
  readonly inbound: InboundStore;
  readonly reactions: ReactionStore;
  readonly readMarkers: ReadMarkerStore;
  readonly sentFrames: SentFrameStore;
  readonly hostedMedia: HostedMediaStore;
  readonly journal: JournalStore;
  readonly matrixSends: MatrixSendStore;

  constructor(readonly db: Database) {
    this.users = new UserStore(db);
    this.ghosts = new GhostStore(db);
    this.portals = new PortalStore(db);
    this.messages = new MessageStore(db);
    this.outbound = new OutboundStore(db);
    this.inbound = new InboundStore(db);
    this.reactions = new ReactionStore(db);
    this.readMarkers = new ReadMarkerStore(db);
    this.sentFrames = new SentFrameStore(db);
    this.hostedMedia = new HostedMediaStore(db);
    this.journal = new JournalStore(db);
    this.matrixSends = new MatrixSendStore(db);
  }

  static open(file: string): BridgeStore {
    return new BridgeStore(openDatabase(file));
  }

  signalRecords(owner: string): SignalRecordTable {
    return new SignalRecordTable(this.db, owner);
  }

  /** Runs fn in one SQLite transaction (all or nothing). */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  close(): void {
    this.db.close();
  }
}
