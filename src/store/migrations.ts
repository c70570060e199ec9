/**
 * Numbered schema migrations. Each runs once, in order, inside a transaction, and is recorded
 * in `schema_migrations`. Never edit a released migration: add the next number.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "initial schema: users, ghosts, portals, participants, message map",
    sql: `
      CREATE TABLE matrix_users (
        mxid TEXT PRIMARY KEY,
        management_room_id TEXT,
        third_party_enabled INTEGER NOT NULL DEFAULT 1,
        inbox_mode TEXT NOT NULL DEFAULT 'unified',
        space_room_id TEXT,
        created_at INTEGER NOT NULL
      );
      CREATE TABLE ghosts (
        remote_id TEXT PRIMARY KEY,
        mxid TEXT NOT NULL UNIQUE,
        display_name TEXT,
        avatar_id TEXT,
        avatar_mxc TEXT,
        registered INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL
      );
      -- A portal is one Matrix room for one remote chat as seen by one Matrix user (the receiver).
      -- Group chats later use the same table with kind 'group'.
      CREATE TABLE portals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        remote_chat_id TEXT NOT NULL,
        receiver TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('dm', 'group')),
        room_id TEXT UNIQUE,
        created_at INTEGER NOT NULL,
        UNIQUE (remote_chat_id, receiver)
      );
      CREATE TABLE portal_participants (
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        remote_user_id TEXT NOT NULL,
        PRIMARY KEY (portal_id, remote_user_id)
      );
      CREATE TABLE messages (
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        remote_id TEXT NOT NULL,
        part INTEGER NOT NULL DEFAULT 0,
        event_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        PRIMARY KEY (portal_id, remote_id, part)
      );
      CREATE UNIQUE INDEX messages_event ON messages(event_id);
    `,
  },
  {
    version: 2,
    name: "durable outbound queue, processed Matrix events, Signal records",
    sql: `
      -- Matrix events accepted for sending to the network; removed once the network accepted them.
      CREATE TABLE outbound_queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        event_id TEXT NOT NULL UNIQUE,
        sender TEXT NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX outbound_queue_portal ON outbound_queue(portal_id, seq);
      -- Event ids already handled, so a redelivered homeserver transaction is not bridged twice.
      CREATE TABLE processed_events (
        event_id TEXT PRIMARY KEY,
        processed_at INTEGER NOT NULL
      );
      -- Signal identity, prekeys and sessions, one namespace per record kind, values encrypted.
      CREATE TABLE signal_records (
        owner TEXT NOT NULL,
        ns TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (owner, ns, key)
      );
      -- Inbound network frames already bridged (per receiving user and gateway sequence number).
      CREATE TABLE inbound_seen (
        receiver TEXT NOT NULL,
        remote_msg_id TEXT NOT NULL,
        seen_at INTEGER NOT NULL,
        PRIMARY KEY (receiver, remote_msg_id)
      );
    `,
  },
  {
    version: 3,
    name: "conversation fidelity: reply targets, reactions, read markers, sent frames",
    sql: `
      -- The network id of the message a message replies to (edits and deletes repeat it, as MIMI's examples do).
      ALTER TABLE messages ADD COLUMN reply_to TEXT;
      -- The current reaction of each user on each message (WhatsApp keeps one per user per message).
      -- sender is a remote user id, or the portal's Matrix user id for reactions sent from Matrix.
      CREATE TABLE reactions (
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        target_remote_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        emoji TEXT NOT NULL,
        event_id TEXT NOT NULL UNIQUE,
        remote_id TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        PRIMARY KEY (portal_id, target_remote_id, sender)
      );
      -- Network timestamp of the newest remote message the portal's user was reported to have read.
      CREATE TABLE read_markers (
        portal_id INTEGER PRIMARY KEY REFERENCES portals(id) ON DELETE CASCADE,
        read_up_to INTEGER NOT NULL
      );
      -- Transport ids of what the bridge sent and is waiting for a delivery receipt of.
      CREATE TABLE sent_frames (
        frame_id TEXT PRIMARY KEY,
        sender TEXT NOT NULL,
        txn_id TEXT NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX sent_frames_age ON sent_frames(created_at);
    `,
  },
  {
    version: 4,
    name: "encrypted media blobs this bridge hosts for receivers",
    sql: `
      -- One row per blob served by the media host; the file is <media directory>/blobs/<token>.
      CREATE TABLE hosted_media (
        token TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL
      );
      CREATE INDEX hosted_media_expiry ON hosted_media(expires_at);
    `,
  },
  {
    version: 5,
    name: "Third-Party Chats controls: one-time explanation, contacts refused while off",
    sql: `
      -- When the user got the one short explanation of Third-Party Chats (NULL: not yet).
      ALTER TABLE matrix_users ADD COLUMN explained_at INTEGER;
      -- WhatsApp users the network turned away because this user had Third-Party Chats off.
      -- Only who and when: the refused messages themselves were never stored anywhere.
      CREATE TABLE refused_contacts (
        mxid TEXT NOT NULL REFERENCES matrix_users(mxid) ON DELETE CASCADE,
        remote_id TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        PRIMARY KEY (mxid, remote_id)
      );
    `,
  },
  {
    version: 6,
    name: "appservice transaction journal, Matrix send records",
    sql: `
      -- Events of homeserver transactions, written before the transaction is answered and
      -- replayed on start until handled. Keyed by event id (transaction ids restart with the
      -- homeserver); the body is dropped once handled, the key kept a while to refuse repeats.
      CREATE TABLE appservice_journal (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        event_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('event', 'ephemeral')),
        body TEXT,
        received_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        done_at INTEGER
      );
      CREATE INDEX appservice_journal_pending ON appservice_journal(done_at, seq);
      -- Matrix sends by (room, transaction id): started before the request, finished with the
      -- event id after it, so a send interrupted by a crash is looked up instead of repeated.
      CREATE TABLE matrix_sends (
        room_id TEXT NOT NULL,
        txn_id TEXT NOT NULL,
        sender TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        event_id TEXT,
        PRIMARY KEY (room_id, txn_id)
      );
      CREATE INDEX matrix_sends_started ON matrix_sends(started_at);
      CREATE INDEX matrix_sends_event ON matrix_sends(room_id, event_id);
    `,
  },
  {
    version: 7,
    name: "durable inbound queue",
    sql: `
      -- Network events committed before the network is acknowledged, removed in the transaction
      -- that records their effect on Matrix: the gateway's queue moves on at once while each
      -- portal sends to Matrix on its own, in order, and a crash in between loses nothing.
      CREATE TABLE inbound_queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        receiver TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('message', 'change', 'read', 'delivered')),
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, -- failed attempts to bring it to Matrix
        created_at INTEGER NOT NULL,
        UNIQUE (receiver, remote_id)
      );
      CREATE INDEX inbound_queue_portal ON inbound_queue(portal_id, seq);
    `,
  },
  {
    version: 8,
    name: "group chats: one portal per group, its Matrix members, group de-duplication",
    sql: `
      -- A group's portal is one row for all Matrix users of the bridge in it: receiver is ''
      -- (UNIQUE (remote_chat_id, receiver) then keeps one per group), name and group_rev are
      -- the group's name and the rev of the group state last shown in the room.
      ALTER TABLE portals ADD COLUMN name TEXT;
      ALTER TABLE portals ADD COLUMN group_rev INTEGER NOT NULL DEFAULT 0;
      -- The Matrix users of this bridge who are members of a group portal's group.
      CREATE TABLE portal_members (
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        mxid TEXT NOT NULL,
        PRIMARY KEY (portal_id, mxid)
      );
      -- Every Matrix member's account receives its own copy of a group message or change: the
      -- first copy is queued and recorded here in one transaction, the others are dropped.
      CREATE TABLE group_seen (
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        remote_id TEXT NOT NULL,
        seen_at INTEGER NOT NULL,
        PRIMARY KEY (portal_id, remote_id)
      );
      -- The inbound queue also carries group changes (membership, name, admins): rebuilt for the new kind.
      CREATE TABLE inbound_queue_v8 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        portal_id INTEGER NOT NULL REFERENCES portals(id) ON DELETE CASCADE,
        receiver TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('message', 'change', 'read', 'delivered', 'group')),
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        UNIQUE (receiver, remote_id)
      );
      INSERT INTO inbound_queue_v8 (seq, portal_id, receiver, remote_id, kind, payload, attempts, created_at)
        SELECT seq, portal_id, receiver, remote_id, kind, payload, attempts, created_at FROM inbound_queue;
      DROP TABLE inbound_queue;
      ALTER TABLE inbound_queue_v8 RENAME TO inbound_queue;
      CREATE INDEX inbound_queue_portal ON inbound_queue(portal_id, seq);
    `,
  },
  {
    version: 9,
    name: "group chats: a read marker per Matrix member",
    sql: `
      -- Network timestamp of the newest message in the group this Matrix member was reported to
      -- have read (a DM's one marker is in read_markers).
      ALTER TABLE portal_members ADD COLUMN read_up_to INTEGER NOT NULL DEFAULT 0;
    `,
  },
];

export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;
