import { UserControls } from "../bridge/controls";
import { BridgeUserError } from "../bridge/failure";
import { MatrixPort } from "../bridge/matrix-port";
import { explanation } from "../bridge/opt-in";
import { refusedText } from "../bridge/portals";
import { getLogger } from "../logging";
import { BridgeMetrics } from "../metrics/metrics";
import { CommandRateLimiter } from "./command-rate-limit";

const log = getLogger("bot");

interface Command {
  usage: string;
  summary: string;
  run(user: string, args: string[]): Promise<string>;
}

const NOT_PERMITTED = "Sorry, you are not allowed to use this bridge. Ask its administrator if you think you should be.";

/** The bridge bot's commands, answered in the user's DM with the bot (the management room). */
export class BotCommands {
  private readonly commands: Record<string, Command>;
  private readonly limiter = new CommandRateLimiter();

  constructor(
    private readonly controls: UserControls,
    private readonly matrix: MatrixPort,
    private readonly metrics: BridgeMetrics,
  ) {
    const usage = (name: string) => new BridgeUserError(`usage: ${this.commands[name].usage}`);
    // The network's name as its users know it ("WhatsApp"), from the connector.
    const net = controls.networkName;
    const forget: Command = {
      usage: "forget [confirm]",
      summary: "delete everything the bridge keeps about you (your keys, sessions, chats and settings)",
      run: async (user, args) => {
        if (args.length > 1 || (args.length === 1 && args[0].toLowerCase() !== "confirm")) throw usage("forget");
        if (args.length === 0) {
          const preview = this.controls.forgetPreview(user);
          return (
            `This deletes everything this bridge keeps about you: your identity on the ${net} interop network with its encryption keys and sessions, ` +
            `your ${preview.chats} chat(s) and their message links, ${preview.queued} message(s) not yet sent, and your settings. ` +
            `The rooms and their history stay in your Matrix account. Say \`forget confirm\` to go ahead.`
          );
        }
        const done = await this.controls.forget(user);
        return (
          `Done. I deleted your identity on the ${net} interop network with its encryption keys and sessions (here and on the network's gateway), ` +
          `${done.portals} chat(s) with ${done.messages} message link(s), ${done.queued} message(s) waiting to be sent, ` +
          `${done.refusedContacts} record(s) of ${net} users refused while your chats were off` +
          (done.spaceRemoved ? ", your Third-Party Chats space" : "") +
          ` and your settings. The ${net} contacts have left your chat rooms; the rooms and their history stay in your Matrix account, where only you and your homeserver can delete them. ` +
          `Talk to me again any time to start over.`
        );
      },
    };
    this.commands = {
      help: { usage: "help", summary: "show this help", run: async () => this.helpText() },
      enable: {
        usage: "enable",
        summary: `turn Third-Party Chats on: ${net} users can reach you and you can reach them`,
        run: async (user, args) => {
          if (args.length) throw usage("enable");
          const change = await this.controls.setThirdPartyChats(user, true);
          const lines = [
            change.changed ? `Third-Party Chats are **on**. ${net} users can now write to you, and \`start <phone>\` opens a chat.` : "Third-Party Chats were already on.",
          ];
          if (change.refusedWhileOff.length) {
            const who = change.refusedWhileOff.map((c) => c.remoteId).join(", ");
            lines.push(`While they were off, these ${net} users tried to write to you: ${who}. Their messages were not kept; they need to write again.`);
          }
          return lines.join("\n\n");
        },
      },
      disable: {
        usage: "disable",
        summary: `turn Third-Party Chats off: ${net} users are told you don't accept them, and nothing is sent`,
        run: async (user, args) => {
          if (args.length) throw usage("disable");
          const change = await this.controls.setThirdPartyChats(user, false);
          return change.changed
            ? `Third-Party Chats are **off**. ${net} users who write to you are told you don't accept third-party chats, and their messages are not kept; nothing you write in your chats is sent. Say \`enable\` to turn them on again.`
            : "Third-Party Chats were already off.";
        },
      },
      status: {
        usage: "status",
        summary: "your settings, the network connection and your chats",
        run: async (user, args) => {
          if (args.length) throw usage("status");
          const s = this.controls.status(user);
          const connection = s.connection.state === "disconnected" ? `disconnected (${s.connection.reason})` : s.connection.state;
          const lines = [
            `- Third-Party Chats: **${s.thirdPartyChats ? "on" : "off"}**`,
            `- Inbox: ${s.inbox}${s.spaceRoomId ? ` (space: ${this.matrix.roomLink(s.spaceRoomId)})` : ""}`,
            `- Network: ${connection}`,
            `- Chats: ${s.chats}; messages waiting to be sent: ${s.queued}`,
          ];
          if (s.refusedContacts.length) {
            lines.push(`- Refused while off: ${s.refusedContacts.map((c) => `${c.remoteId} (${c.attempts}×)`).join(", ")}`);
          }
          if (s.bridge) lines.push(`- Bridge (admin): ${s.bridge.users} user(s), ${s.bridge.portals} chat(s), ${s.bridge.queued} message(s) waiting`);
          return ["Your Third-Party Chats:", ...lines].join("\n");
        },
      },
      start: {
        usage: "start <phone>",
        summary: `open a chat with a ${net} user, e.g. start +4915123456789`,
        run: async (user, args) => {
          if (args.length !== 1) throw usage("start");
          const chat = await this.controls.startChat(user, args[0]);
          const link = this.matrix.roomLink(chat.roomId);
          return chat.created ? `Started a chat with ${chat.name}: ${link} (accept the invite)` : `You already have a chat with ${chat.name}: ${link}`;
        },
      },
      group: {
        usage: "group <name> <phone> <phone>…",
        summary: `create a ${net} group with you and these users, e.g. group Trip +4915123456789 +4915223456789`,
        run: async (user, args) => {
          // The name is every word before the first phone number.
          const first = args.findIndex((a) => /^\+?[0-9(]/.test(a));
          if (first < 1 || args.length - first < 2) throw usage("group");
          const name = args.slice(0, first).join(" ");
          const group = await this.controls.startGroup(user, name, args.slice(first));
          const link = this.matrix.roomLink(group.roomId);
          return `Created the group "${name}": ${link} (accept the invite)` + (group.refused.length ? `. Not added: ${refusedText(group.refused)}.` : "");
        },
      },
      list: {
        usage: "list",
        summary: "list your Third-Party Chats (1:1 chats and groups)",
        run: async (user, args) => {
          if (args.length) throw usage("list");
          const chats = this.controls.listChats(user);
          if (!chats.length) return "You have no Third-Party Chats yet. Say `start <phone>` to open one.";
          return [
            `Your Third-Party Chats (${chats.length}):`,
            ...chats.map(
              (c) =>
                `- ${c.kind === "group" ? `${c.name} (group, ${c.members} ${this.controls.networkName} members)` : `${c.name} (${c.remoteUserId})`}: ${this.matrix.roomLink(c.roomId)}`,
            ),
          ].join("\n");
        },
      },
      inbox: {
        usage: "inbox dedicated|unified",
        summary: "dedicated: keep your Third-Party Chats in a space of their own; unified: among your other chats",
        run: async (user, args) => {
          const mode = args[0]?.toLowerCase();
          if (args.length !== 1 || (mode !== "dedicated" && mode !== "unified")) throw usage("inbox");
          const change = await this.controls.setInbox(user, mode);
          if (mode === "dedicated") {
            const where = this.matrix.roomLink(change.spaceRoomId!);
            return change.changed
              ? `Your Third-Party Chats are now in the space "Third-Party Chats" (${where}); accept its invite. ${change.portals} chat(s) are in it, and new ones join it as they start.`
              : `Your inbox is already dedicated (${where}); its ${change.portals} chat(s) are listed in it.`;
          }
          return change.changed ? "Your Third-Party Chats are back among your other chats; the space is gone." : "Your inbox is already unified.";
        },
      },
      logout: { ...forget, usage: "logout [confirm]", summary: "the same as `forget`" },
      forget,
      version: {
        usage: "version",
        summary: "the bridge's version",
        run: async () => {
          const v = this.controls.version();
          return `matrix-interop-bridge ${v.bridge} (interop protocol v${v.protocol}, Node ${v.node})`;
        },
      },
    };
  }

  helpText(): string {
    const lines = Object.values(this.commands).map((c) => `- \`${c.usage}\` — ${c.summary}`);
    return [`This bot bridges your Matrix account to ${this.controls.networkName} Third-Party Chats. Commands:`, ...lines].join("\n");
  }

  /** The greeting in a new management room: the one-time explanation on first contact. */
  welcomeText(firstContact: boolean, enabled: boolean): string {
    return firstContact ? `${explanation(enabled, this.controls.networkName)}\n\n${this.helpText()}` : `Welcome back. ${this.helpText()}`;
  }

  /** The refusal for a user the config does not permit. */
  static notPermittedText(): string {
    return NOT_PERMITTED;
  }

  /**
   * Runs one command line and returns the reply (never throws); null means "say nothing" (a
   * flood of commands over the rate limit gets one answer).
   */
  async handle(user: string, text: string): Promise<string | null> {
    const [name, ...args] = text.trim().split(/\s+/);
    const key = (name ?? "").toLowerCase();
    const count = (outcome: string) => this.metrics.botCommandsTotal.inc({ command: key in this.commands ? key : "unknown", outcome });
    if (this.controls.levelOf(user) === "none") {
      count("refused");
      return NOT_PERMITTED;
    }
    const allowed = this.limiter.take(user);
    log.debug("bot command", { user, command: key, allowed });
    if (allowed !== "ok") {
      count("rate_limited");
      return allowed === "limited" ? `You are sending commands faster than I answer them; wait ${Math.ceil(this.limiter.waitMs(user) / 1000)} s and try again.` : null;
    }
    const command = this.commands[key];
    if (!command) {
      count("refused");
      return `Unknown command "${name ?? ""}".\n${this.helpText()}`;
    }
    try {
      const reply = await command.run(user, args);
      count("ok");
      return reply;
    } catch (err) {
      if (err instanceof BridgeUserError) {
        count("refused");
        return err.message.startsWith("usage:") ? err.message : `${capitalize(err.message)}.\nusage: ${command.usage}`;
      }
      count("failed");
      log.error("bot command failed", { command: key, error: (err as Error).message });
      return `Sorry, \`${key}\` failed: ${(err as Error).message}\nusage: ${command.usage}`;
    }
  }
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
