/** The simulator's HTTP control API (docs/simulator.md), as the e2e tests use it. */
export interface InboxEntry {
  n: number;
  from: string;
  kind: string;
  id?: string;
  ts?: number;
  text?: string;
  [key: string]: unknown;
}

export class SimApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export class SimApi {
  constructor(readonly url: string) {}

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(this.url + path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : {};
    if (!res.ok) throw new SimApiError(res.status, json.error ?? "unknown", `${method} ${path} → ${res.status} ${json.error}: ${json.message}`);
    return json as T;
  }

  createUser(phone: string, name: string, avatar?: { mimetype: string; base64: string }): Promise<unknown> {
    return this.request("POST", "/users", { phone, name, avatar });
  }

  updateUser(phone: string, changes: { name?: string; avatar?: { mimetype: string; base64: string } | null }): Promise<unknown> {
    return this.request("PATCH", `/users/${encodeURIComponent(phone)}`, changes);
  }

  setThirdPartyChats(phone: string, on: boolean): Promise<unknown> {
    return this.request("PUT", `/users/${encodeURIComponent(phone)}/settings`, { thirdPartyChats: on });
  }

  sendText(phone: string, to: string, text: string, extra: Record<string, unknown> = {}): Promise<{ id: string; ts: number }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/messages`, { to, text, ...extra });
  }

  sendSticker(phone: string, to: string): Promise<{ id: string; ts: number }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/stickers`, { to });
  }

  /** A status update to every third-party contact of the user. */
  sendStatus(phone: string, text: string): Promise<{ sent: { to: string; id: string; ts: number }[]; failed: { to: string; error: string }[] }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/status`, { text });
  }

  setDisappearing(phone: string, to: string, seconds: number): Promise<{ ts: number }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/disappearing`, { to, seconds });
  }

  reinstall(phone: string): Promise<unknown> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/reinstall`, {});
  }

  sendReaction(phone: string, to: string, target: string, emoji: string): Promise<{ id: string; ts: number }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/reactions`, { to, target, emoji });
  }

  /** Withdraws the reaction `reaction` from `target` ("unlike"). */
  withdrawReaction(phone: string, to: string, target: string, reaction: string): Promise<{ id: string; ts: number }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/reactions`, { to, target, reaction });
  }

  sendEdit(phone: string, to: string, target: string, text: string): Promise<{ id: string; ts: number }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/edits`, { to, target, text });
  }

  sendDeletion(phone: string, to: string, target: string): Promise<{ id: string; ts: number }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/deletions`, { to, target });
  }

  sendRead(phone: string, to: string, ids: string[]): Promise<{ ts: number }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/read`, { to, ids });
  }

  sendTyping(phone: string, to: string, state: "on" | "off"): Promise<{ sent: true }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/typing`, { to, state });
  }

  /** Sends a file (an absolute path on this machine) as a photo, video, voice note, audio file or document. */
  sendMedia(
    phone: string,
    to: string,
    media: { file: string; mimetype: string; kind?: string; filename?: string; caption?: string; waveform?: number[]; width?: number; height?: number; durationMs?: number },
  ): Promise<{ id: string; ts: number; url: string; size: number; sha256: string }> {
    return this.request("POST", `/users/${encodeURIComponent(phone)}/media`, { to, ...media });
  }

  /** Every request the simulator's media host received for a hosted blob, oldest first. */
  blobRequests(): Promise<{ method: string; path: string; at: number }[]> {
    return this.request("GET", "/hosted-media/requests");
  }

  inbox(phone: string, after = 0): Promise<InboxEntry[]> {
    return this.request("GET", `/users/${encodeURIComponent(phone)}/inbox?after=${after}`);
  }

  /** Waits until the user's inbox holds an entry matching `match`; fails listing what arrived. */
  async waitForInbox(phone: string, match: (e: InboxEntry) => boolean, timeoutMs = 20_000): Promise<InboxEntry> {
    const deadline = Date.now() + timeoutMs;
    let after = 0;
    const seen: InboxEntry[] = [];
    while (Date.now() < deadline) {
      const batch = await this.request<InboxEntry[]>(
        "GET",
        `/users/${encodeURIComponent(phone)}/inbox/wait?after=${after}&timeoutMs=${Math.min(5000, Math.max(1, deadline - Date.now()))}`,
      );
      for (const entry of batch) {
        seen.push(entry);
        after = Math.max(after, entry.n);
        if (match(entry)) return entry;
      }
    }
    throw new Error(`${phone}: timed out after ${timeoutMs} ms; inbox had: ${JSON.stringify(seen.map((e) => ({ kind: e.kind, from: e.from, text: e.text })))}`);
  }
}
