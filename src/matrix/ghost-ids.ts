import { BridgeConfig } from "../config";

/** Maps WhatsApp-side user ids (E.164) to ghost Matrix ids and back, by the configured template. */
export class GhostIds {
  private readonly before: string;
  private readonly after: string;
  private readonly domain: string;

  constructor(config: BridgeConfig) {
    [this.before, this.after] = config.appservice.ghosts.localpart_template.split("{phone}");
    this.domain = config.homeserver.domain;
  }

  mxidFor(remoteUserId: string): string {
    const digits = remoteUserId.replace(/^\+/, "");
    if (!/^[0-9]{1,15}$/.test(digits)) throw new Error(`not an E.164 number: ${remoteUserId}`);
    return `@${this.before}${digits}${this.after}:${this.domain}`;
  }

  remoteIdOf(mxid: string): string | null {
    const prefix = `@${this.before}`;
    const suffix = `${this.after}:${this.domain}`;
    if (!mxid.startsWith(prefix) || !mxid.endsWith(suffix)) return null;
    const digits = mxid.slice(prefix.length, mxid.length - suffix.length);
    return /^[0-9]{1,15}$/.test(digits) ? `+${digits}` : null;
  }
}
