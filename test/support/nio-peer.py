"""An independent end-to-end encrypting Matrix client for the encryption tests: matrix-nio with
libolm (Debian's python3-matrix-nio), run with /usr/bin/python3. One JSON command per stdin line,
one JSON answer per stdout line:

  {"cmd": "create_room", "invite": "@ghost:hs"}   -> {"room_id": ..., "encrypted": bool}
  {"cmd": "wait_joined", "room": R, "user": U}     -> {"ok": true}
  {"cmd": "send", "room": R, "text": T}            -> {"event_id": ...}
  {"cmd": "wait_message", "room": R, "text": T}    -> {"sender", "sender_key", "decrypted"}
  {"cmd": "cross_signing", "user": U}              -> {"devices": {id: {"cross_signed": bool, "curve25519": key}}}
  {"cmd": "undecryptable"}                         -> {"count": n}
  {"cmd": "wait_invite", "inviter": U}             -> {"room_id": ...} (a room U invited the user to)
  {"cmd": "join", "room": R}                       -> {"encrypted": bool} (once nio knows the room's state)
  {"cmd": "send_content", "room": R, "type": T, "content": C} -> {"event_id": ...} (encrypted when the room is)
  {"cmd": "redact", "room": R, "event_id": E}      -> {"event_id": ...}
  {"cmd": "enable_encryption", "room": R}          -> {"event_id": ...} (the user turns encryption on)
  {"cmd": "download_decrypt", "file": F}           -> {"sha256": hex of the plaintext, "size": n} (F: an EncryptedFile; hash checked)
  {"cmd": "send_raw", "room": R, "type": T, "content": C} -> {"event_id"} sent as it is (never encrypted by nio)
  {"cmd": "send_encrypted_file", "room": R, "path": P, "msgtype": M, "mimetype": T, "body": B}
                                                   -> {"event_id", "url"} the file as an encrypted attachment (`file`, no `url`)
  {"cmd": "wait_body", "room": R, "sender": U, "pattern": P} -> a message (any msgtype) whose body matches P
  {"cmd": "messages", "room": R}                   -> {"messages": [...]} every message seen in R, in order
  {"cmd": "send_txn", "room": R, "text": T, "txn": X} -> {"event_id"} an m.text with the transaction id X (a repeat is the same event)
  {"cmd": "timeline", "room": R}                   -> {"events": [{"sender", "text"} | {"sender", "undecryptable": true}], "late": n, "limited": n}
                                                      every message event of R in sync order; events that failed to decrypt are tried
                                                      again first (as clients do when a key arrives late: `late` counts those that then did)
  {"cmd": "arrivals", "after": n}                  -> {"arrivals": [{"sender", "text", "at"}], "next": m} messages seen from the n-th on
                                                      (every room), "at" the wall-clock ms nio had decrypted it (the benchmark's clock)
  {"cmd": "upload_encrypted", "path": P}           -> {"file": EncryptedFile with url, "size": n} encrypts and uploads, sends nothing

Started with one argument: JSON {"hs", "user_id", "device_id", "token", "store"}; with "timeline_limit": n, every sync asks
for up to n events per room, so a busy room's sync has no gap ("limited" counts the syncs that had one anyway).
"""
import asyncio
import json
import sys
import urllib.error
import urllib.request

import hashlib
import re
import time

from nio import AsyncClient, AsyncClientConfig, MegolmEvent, RoomMessage
from nio.crypto.attachments import decrypt_attachment, encrypt_attachment
from olm import ed25519_verify


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_by(obj, user_id, key_id, public_key):
    """True when obj carries a valid ed25519 signature by public_key under user_id/key_id."""
    signature = obj.get("signatures", {}).get(user_id, {}).get(key_id)
    if not signature:
        return False
    unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    try:
        ed25519_verify(public_key, canonical(unsigned), signature)
        return True
    except Exception:
        return False


async def main():
    args = json.loads(sys.argv[1])
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True)
    client = AsyncClient(args["hs"], args["user_id"], device_id=args["device_id"], store_path=args["store"], config=config)
    client.restore_login(args["user_id"], args["device_id"], args["token"])
    messages = []
    undecryptable = []
    timelines = {}  # room id -> [[event, decrypted event or None]] in sync order
    late = {}
    limited = {}
    joined_before = set()
    sync_filter = {"room": {"timeline": {"limit": args["timeline_limit"]}}} if args.get("timeline_limit") else None

    async def on_message(room, event):
        timelines.setdefault(room.room_id, []).append([event, None if isinstance(event, MegolmEvent) else event])
        if isinstance(event, MegolmEvent):
            undecryptable.append(event.event_id)
            return
        content = event.source.get("content", {})
        messages.append({"room": room.room_id, "sender": event.sender, "text": content.get("body"), "event_id": event.event_id,
                         "msgtype": content.get("msgtype"), "content": content,
                         "sender_key": getattr(event, "sender_key", None), "decrypted": bool(getattr(event, "decrypted", False)),
                         "at": time.time() * 1000})

    client.add_event_callback(on_message, (RoomMessage, MegolmEvent))
    changed = asyncio.Event()

    async def sync_loop():
        while True:
            response = await client.sync(timeout=1000, full_state=False, sync_filter=sync_filter)
            for room_id, room in getattr(getattr(response, "rooms", None), "join", {}).items():
                # A room's first sync as a member (the join) has nothing before it to miss.
                if room.timeline.limited and room_id in joined_before:
                    limited[room_id] = limited.get(room_id, 0) + 1
                joined_before.add(room_id)
            if client.should_upload_keys:
                await client.keys_upload()
            if client.should_query_keys:
                await client.keys_query()
            if client.should_claim_keys:
                await client.keys_claim(client.get_users_for_key_claiming())
            changed.set()

    await client.sync(timeout=0, full_state=True, sync_filter=sync_filter)
    if client.should_upload_keys:
        await client.keys_upload()
    syncing = asyncio.ensure_future(sync_loop())

    async def until(check, what):
        while True:
            result = check()
            if result:
                return result
            if syncing.done():
                raise RuntimeError(f"sync stopped while waiting for {what}: {syncing.exception()}")
            changed.clear()
            await changed.wait()

    def raw_keys_query(user):
        body = json.dumps({"device_keys": {user: []}}).encode()
        request = urllib.request.Request(f"{args['hs']}/_matrix/client/v3/keys/query", data=body, method="POST",
                                         headers={"Authorization": f"Bearer {args['token']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def raw_download(mxc):
        server, media_id = mxc[len("mxc://"):].split("/", 1)
        request = urllib.request.Request(f"{args['hs']}/_matrix/client/v1/media/download/{server}/{media_id}",
                                         headers={"Authorization": f"Bearer {args['token']}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def raw_upload(data):
        request = urllib.request.Request(f"{args['hs']}/_matrix/media/v3/upload", data=data, method="POST",
                                         headers={"Authorization": f"Bearer {args['token']}", "Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["content_uri"]

    def raw_send(room, event_type, content):
        txn = f"raw{len(messages)}{id(content)}"
        request = urllib.request.Request(f"{args['hs']}/_matrix/client/v3/rooms/{room}/send/{event_type}/{txn}",
                                         data=json.dumps(content).encode(), method="PUT",
                                         headers={"Authorization": f"Bearer {args['token']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["event_id"]

    def raw_get(path):
        request = urllib.request.Request(f"{args['hs']}{path}", headers={"Authorization": f"Bearer {args['token']}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError:
            return {}

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        try:
            if cmd["cmd"] == "create_room":
                response = await client.room_create(is_direct=True, invite=[cmd["invite"]], preset=None)
                room_id = response.room_id
                # Synapse's encryption_enabled_by_default_for_room_type adds m.room.encryption itself;
                # read the room state from the server (nio's room object may not have it yet).
                state = await loop.run_in_executor(None, raw_get, f"/_matrix/client/v3/rooms/{room_id}/state/m.room.encryption/")
                if state.get("algorithm"):
                    await until(lambda: room_id in client.rooms and client.rooms[room_id].encrypted, "the room's encryption state")
                else:
                    await until(lambda: room_id in client.rooms, "the room")
                answer({"room_id": room_id, "encrypted": state.get("algorithm") == "m.megolm.v1.aes-sha2"})
            elif cmd["cmd"] == "wait_joined":
                await until(lambda: cmd["user"] in client.rooms[cmd["room"]].users, "the join")
                answer({"ok": True})
            elif cmd["cmd"] == "send":
                if client.should_query_keys:
                    await client.keys_query()
                response = await client.room_send(cmd["room"], "m.room.message", {"msgtype": "m.text", "body": cmd["text"]},
                                                  ignore_unverified_devices=True)
                answer({"event_id": response.event_id})
            elif cmd["cmd"] == "wait_message":
                found = await until(lambda: next((m for m in messages if m["room"] == cmd["room"] and m["text"] == cmd["text"]), None), "the message")
                answer(found)
            elif cmd["cmd"] == "cross_signing":
                user = cmd["user"]
                keys = await loop.run_in_executor(None, raw_keys_query, user)
                master = keys.get("master_keys", {}).get(user)
                ssk = keys.get("self_signing_keys", {}).get(user)
                devices = {}
                master_pub = next(iter(master["keys"].values())) if master else None
                ssk_pub = next(iter(ssk["keys"].values())) if ssk else None
                ssk_ok = bool(ssk and master and signed_by(ssk, user, f"ed25519:{master_pub}", master_pub))
                for device_id, device in keys.get("device_keys", {}).get(user, {}).items():
                    ok = ssk_ok and signed_by(device, user, f"ed25519:{ssk_pub}", ssk_pub)
                    devices[device_id] = {"cross_signed": ok, "curve25519": device["keys"].get(f"curve25519:{device_id}")}
                answer({"devices": devices, "has_master": master is not None, "ssk_signed_by_master": ssk_ok})
            elif cmd["cmd"] == "wait_invite":
                room_id = await until(lambda: next((rid for rid, r in client.invited_rooms.items() if r.inviter == cmd["inviter"]), None), "the invite")
                answer({"room_id": room_id})
            elif cmd["cmd"] == "join":
                response = await client.join(cmd["room"])
                if not hasattr(response, "room_id"):
                    raise RuntimeError(f"join failed: {response}")
                await until(lambda: cmd["room"] in client.rooms, "the joined room")
                answer({"encrypted": client.rooms[cmd["room"]].encrypted})
            elif cmd["cmd"] == "send_content":
                if client.should_query_keys:
                    await client.keys_query()
                response = await client.room_send(cmd["room"], cmd["type"], cmd["content"], ignore_unverified_devices=True)
                if not hasattr(response, "event_id"):
                    raise RuntimeError(f"send failed: {response}")
                answer({"event_id": response.event_id})
            elif cmd["cmd"] == "enable_encryption":
                response = await client.room_put_state(cmd["room"], "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
                if not hasattr(response, "event_id"):
                    raise RuntimeError(f"enabling encryption failed: {response}")
                await until(lambda: client.rooms[cmd["room"]].encrypted, "the room's encryption")
                answer({"event_id": response.event_id})
            elif cmd["cmd"] == "download_decrypt":
                f = cmd["file"]
                ciphertext = await loop.run_in_executor(None, raw_download, f["url"])
                plain = decrypt_attachment(ciphertext, f["key"]["k"], f["hashes"]["sha256"], f["iv"])
                answer({"sha256": hashlib.sha256(plain).hexdigest(), "size": len(plain), "ciphertext_size": len(ciphertext)})
            elif cmd["cmd"] == "send_raw":
                event_id = await loop.run_in_executor(None, raw_send, cmd["room"], cmd["type"], cmd["content"])
                answer({"event_id": event_id})
            elif cmd["cmd"] == "send_encrypted_file":
                with open(cmd["path"], "rb") as f:
                    plain = f.read()
                ciphertext, keys = encrypt_attachment(plain)
                url = await loop.run_in_executor(None, raw_upload, ciphertext)
                content = {"msgtype": cmd["msgtype"], "body": cmd["body"], "filename": cmd["body"],
                           "info": {"mimetype": cmd["mimetype"], "size": len(plain)}, "file": {**keys, "url": url}}
                if client.should_query_keys:
                    await client.keys_query()
                response = await client.room_send(cmd["room"], "m.room.message", content, ignore_unverified_devices=True)
                if not hasattr(response, "event_id"):
                    raise RuntimeError(f"send failed: {response}")
                answer({"event_id": response.event_id, "url": url})
            elif cmd["cmd"] == "redact":
                response = await client.room_redact(cmd["room"], cmd["event_id"])
                if not hasattr(response, "event_id"):
                    raise RuntimeError(f"redact failed: {response}")
                answer({"event_id": response.event_id})
            elif cmd["cmd"] == "wait_body":
                pattern = re.compile(cmd["pattern"])
                found = await until(lambda: next((m for m in messages if m["room"] == cmd["room"] and m["sender"] == cmd["sender"]
                                                  and isinstance(m["text"], str) and pattern.search(m["text"])), None), "the message")
                answer(found)
            elif cmd["cmd"] == "messages":
                answer({"messages": [m for m in messages if m["room"] == cmd["room"]]})
            elif cmd["cmd"] == "send_txn":
                if client.should_query_keys:
                    await client.keys_query()
                response = await client.room_send(cmd["room"], "m.room.message", {"msgtype": "m.text", "body": cmd["text"]},
                                                  tx_id=cmd["txn"], ignore_unverified_devices=True)
                if not hasattr(response, "event_id"):
                    raise RuntimeError(f"send failed: {response}")
                answer({"event_id": response.event_id})
            elif cmd["cmd"] == "timeline":
                events = []
                for entry in timelines.get(cmd["room"], []):
                    if entry[1] is None:
                        try:
                            decrypted = client.decrypt_event(entry[0])
                        except Exception:
                            decrypted = None
                        if isinstance(decrypted, RoomMessage):
                            entry[1] = decrypted
                            late[cmd["room"]] = late.get(cmd["room"], 0) + 1
                    if entry[1] is None:
                        events.append({"sender": entry[0].sender, "undecryptable": True})
                    else:
                        events.append({"sender": entry[1].sender, "text": entry[1].source.get("content", {}).get("body")})
                answer({"events": events, "late": late.get(cmd["room"], 0), "limited": limited.get(cmd["room"], 0)})
            elif cmd["cmd"] == "arrivals":
                seen = messages[cmd["after"]:]
                answer({"arrivals": [{"sender": m["sender"], "text": m["text"], "at": m["at"]} for m in seen], "next": len(messages)})
            elif cmd["cmd"] == "upload_encrypted":
                with open(cmd["path"], "rb") as f:
                    plain = f.read()
                ciphertext, keys = encrypt_attachment(plain)
                del plain
                url = await loop.run_in_executor(None, raw_upload, ciphertext)
                answer({"file": {**keys, "url": url}, "size": len(ciphertext)})
            elif cmd["cmd"] == "undecryptable":
                answer({"count": len(undecryptable)})
            else:
                answer({"error": f"unknown command {cmd['cmd']}"})
        except Exception as err:  # the test reads the error, the peer stays up
            answer({"error": f"{type(err).__name__}: {err}"})
    syncing.cancel()
    await client.close()


asyncio.run(main())
