import { BridgeCore, BridgeUserError } from "../bridge/core";
import { MatrixPort } from "../bridge/matrix-port";
import { getLogger } from "../logging";

const log = getLogger("bot");

interface Command {
  usage: string;
  summary: string;
  run(user: string, args: string[]): Promise<string>;
}

/** The bridge bot's commands, answered in the user's DM with the bot (the management room). */
export class BotCommands {
  private readonly commands: Record<string, Command>;

  constructor(
    private readonly core: BridgeCore,
    private readonly matrix: MatrixPort,
  ) {
    this.commands = {
      help: { usage: "help", summary: "show this help", run: async () => this.helpText() },
      start: {
        usage: "start <phone>",
        summary: "open a chat with a WhatsApp user, e.g. start +4915123456789",
        run: async (user, args) => {
          if (args.length !== 1) throw new BridgeUserError(`usage: ${this.commands.start.usage}`);
          const chat = await this.core.startChat(user, args[0]);
          const link = this.matrix.roomLink(chat.roomId);
          return chat.created ? `Started a chat with ${chat.name}: ${link} (accept the invite)` : `You already have a chat with ${chat.name}: ${link}`;
        },
      },
      list: {
        usage: "list",
        summary: "list your Third-Party Chats",
        run: async (user) => {
          const chats = this.core.listChats(user);
          if (!chats.length) return "You have no Third-Party Chats yet. Say `start <phone>` to open one.";
          return [`Your Third-Party Chats (${chats.length}):`, ...chats.map((c) => `- ${c.name} (${c.remoteUserId}): ${this.matrix.roomLink(c.roomId)}`)].join("\n");
        },
      },
    };
  }

  helpText(): string {
    const lines = Object.values(this.commands).map((c) => `- \`${c.usage}\` — ${c.summary}`);
    return ["This bot bridges your Matrix account to WhatsApp Third-Party Chats. Commands:", ...lines].join("\n");
  }

  /** Runs one command line and returns the reply text (never throws). */
  async handle(user: string, text: string): Promise<string> {
    const [name, ...args] = text.trim().split(/\s+/);
    const command = this.commands[(name ?? "").toLowerCase()];
    if (!command) return `Unknown command "${name ?? ""}".\n${this.helpText()}`;
    try {
      return await command.run(user, args);
    } catch (err) {
      if (err instanceof BridgeUserError) return `${err.message}\nusage: ${command.usage}`;
      log.error("bot command failed", { command: name, error: (err as Error).message });
      return `Sorry, \`${name}\` failed: ${(err as Error).message}`;
    }
  }
}
