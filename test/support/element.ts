/**
 * Element Web in headless Chromium, as the Matrix user of the browser tests: Debian's
 * `chromium` driven through playwright-core (which never downloads a browser of its own).
 * Each test gets a fresh browser context (a fresh profile: no IndexedDB, no local storage) and
 * a fresh account, because a second login of an account with cross-signing set up lands on
 * "Confirm your identity" instead of the room list.
 *
 * Everything here acts as a person does (click, type, press Enter) and waits for what Element
 * shows, each wait bounded; nothing sleeps for a fixed time.
 */
import fs from "node:fs";
import path from "node:path";
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from "playwright-core";
import { repoRoot } from "./homeserver";

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Console lines this build prints on every start (../shared/element-web/README.md): not worth repeating in a failure. */
const KNOWN_NOISE = [
  /Cannot access '\w+' before initialization/,
  /config\.[\d.]+\.json/,
  /\.well-known/,
  /openid-configuration|auth_metadata|auth_issuer/,
  /Failed to load resource: the server responded with a status of 404/,
];

/** test-artifacts/element/ in the repository (gitignored): screenshots a person can look at. */
export function artifactsDir(): string {
  const dir = path.join(repoRoot(), "test-artifacts", "element");
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

export async function launchChromium(): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM_PATH)) {
    throw new Error(`no Chromium at ${CHROMIUM_PATH}: install Debian's chromium package (scripts/setup.sh does), or set CHROMIUM_PATH`);
  }
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

export interface ElementUser {
  userId: string;
  localpart: string;
  password: string;
}

/** One person using Element: a fresh browser context, logged in as one account. */
export class ElementSession {
  readonly console: string[] = [];
  private shots = 0;

  private constructor(
    readonly context: BrowserContext,
    readonly page: Page,
    readonly elementUrl: string,
    readonly name: string,
  ) {}

  static async open(browser: Browser, elementUrl: string, name: string): Promise<ElementSession> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: "en-GB", timezoneId: "UTC" });
    context.setDefaultTimeout(30_000);
    const page = await context.newPage();
    const session = new ElementSession(context, page, elementUrl, name);
    page.on("console", (m) => {
      if (m.type() === "error" && !KNOWN_NOISE.some((re) => re.test(m.text()))) session.console.push(`console.error: ${m.text()}`);
    });
    page.on("pageerror", (e) => {
      if (!KNOWN_NOISE.some((re) => re.test(e.message))) session.console.push(`pageerror: ${e.message}`);
    });
    return session;
  }

  /** Signs in on Element's login page and waits for the room list. */
  async login(user: ElementUser): Promise<void> {
    await this.page.goto(`${this.elementUrl}#/login`);
    await this.page.locator("#mx_LoginForm_username").fill(user.localpart);
    await this.page.locator("#mx_LoginForm_password").fill(user.password);
    await this.page.locator(".mx_Login_submit").click();
    await this.page.locator(".mx_LeftPanel").waitFor({ timeout: 60_000 });
    await this.dismissPopovers();
  }

  /**
   * Closes what a fresh account sees first ("Chats has a new look", notifications, "Set up
   * recovery"), as a person would: each of their buttons that is there now.
   */
  async dismissPopovers(): Promise<void> {
    const buttons = ["Dismiss", "OK", "Later", "Got it", "Next", "Done"];
    for (let round = 0; round < 6; round++) {
      let clicked = false;
      for (const name of buttons) {
        const b = this.page.locator(".mx_Toast_toast, [role=dialog], [data-floating-ui-portal], .mx_Dialog").getByRole("button", { name, exact: true });
        if ((await b.count()) > 0 && (await b.first().isVisible())) {
          await b
            .first()
            .click()
            .catch(() => undefined);
          clicked = true;
        }
      }
      if (!clicked) return;
    }
  }

  /** The room list entry named `name` (rooms and invites alike). */
  roomTile(name: string | RegExp): Locator {
    return this.page.locator(".mx_LeftPanel").getByRole("option", { name });
  }

  async openRoom(name: string | RegExp): Promise<void> {
    await this.roomTile(name).first().click();
    await this.page.locator(".mx_RoomView").waitFor();
  }

  /**
   * Opens the invite from `name` and accepts it ("Start chatting" for a direct chat, "Accept"
   * for a room); resolves when the composer shows, i.e. the user has joined.
   */
  async acceptInvite(name: string | RegExp): Promise<void> {
    await this.roomTile(name).first().waitFor({ timeout: 60_000 });
    await this.openRoom(name);
    await this.page.getByRole("button", { name: /^(Start chatting|Accept)$/ }).click();
    await this.composer().waitFor({ timeout: 30_000 });
  }

  /**
   * The message composer of the open room. Its name says what it will send: "Send a message…",
   * "Send an unencrypted message…", "Send an unencrypted reply…" and so on.
   */
  composer(): Locator {
    return this.page.getByRole("textbox", { name: /^Send an? (unencrypted |encrypted )?(message|reply)…$/ });
  }

  /**
   * "Start chat" the way a person does: New conversation → Start chat → type the user id →
   * Go. Element then shows a room that exists only locally until the first message is sent.
   */
  async startChat(userId: string): Promise<void> {
    await this.page.getByRole("button", { name: "New conversation" }).click();
    await this.page.getByRole("menuitem", { name: "Start chat" }).click();
    const dialog = this.page.getByRole("dialog");
    await dialog.getByRole("textbox").first().pressSequentially(userId);
    await dialog.getByRole("button", { name: "Go", exact: true }).click();
    await dialog.waitFor({ state: "detached" });
    await this.composer().waitFor();
  }

  async send(text: string): Promise<void> {
    const box = this.composer();
    await box.click();
    await box.pressSequentially(text);
    await box.press("Enter");
  }

  /**
   * The timeline tile whose own body contains `text` (the last one if several). A reply quotes
   * the message it answers inside its tile, so quoted bodies do not count.
   */
  tile(text: string | RegExp): Locator {
    return this.page
      .locator(".mx_RoomView_body .mx_EventTile")
      .filter({ has: this.page.locator(".mx_EventTile_body:not(.mx_ReplyChain *)", { hasText: text }) })
      .last();
  }

  /** Clicks one of the buttons of the bar Element shows on a message when the pointer is over it (Reply, React, Edit…). */
  async messageAction(tile: Locator, action: string): Promise<void> {
    await tile.hover();
    await tile.locator(".mx_MessageActionBar").getByRole("button", { name: action, exact: true }).click();
  }

  /** The message events of room `roomName` as Element's own client received them (type, sender, content), oldest first. */
  async timeline(roomName: string): Promise<{ type: string; sender: string; content: Record<string, any> }[]> {
    return this.page.evaluate((name) => {
      const client = (globalThis as any).mxMatrixClientPeg.get();
      const room = client.getRooms().find((r: any) => r.name === name);
      if (!room) throw new Error(`Element has no room named ${name}`);
      return room
        .getLiveTimeline()
        .getEvents()
        .map((e: any) => ({ type: e.getType(), sender: e.getSender(), content: e.getContent() }));
    }, roomName);
  }

  /** Whether the open room's state (as Element's own client holds it) has m.room.encryption. */
  async roomIsEncrypted(roomName: string): Promise<boolean> {
    return this.page.evaluate((name) => {
      const client = (globalThis as any).mxMatrixClientPeg.get();
      const room = client.getRooms().find((r: any) => r.name === name);
      if (!room) throw new Error(`Element has no room named ${name}`);
      return Boolean(room.currentState.getStateEvents("m.room.encryption", ""));
    }, roomName);
  }

  /** Saves a screenshot of the whole window as test-artifacts/element/<name>-<n>-<label>.png and returns its path. */
  async screenshot(label: string): Promise<string> {
    const file = path.join(artifactsDir(), `${this.name}-${String(++this.shots).padStart(2, "0")}-${label}.png`);
    await this.page.screenshot({ path: file });
    return file;
  }

  async close(): Promise<void> {
    await this.context.close().catch(() => undefined);
  }
}
