/**
 * The demo (`npm run demo`): starts Synapse, our gateway, the WhatsApp simulator and the bridge
 * from the project's own files, creates a Matrix demo user, has two simulated WhatsApp users
 * greet them, prints how to log in and what to try, and runs until Ctrl-C.
 *
 * It reuses the end-to-end test harness (test/support/stack.ts), so the demo runs exactly what
 * the tests verify. With MATRIX_HOMESERVER_URL, MATRIX_SERVER_NAME,
 * MATRIX_REGISTRATION_SHARED_SECRET and MATRIX_BRIDGE_REGISTRATION it uses your homeserver.
 *
 * When the Element Web build is at hand (ELEMENT_WEB_DIR, or ../shared/element-web next to the
 * repository), the demo serves Element too, already pointed at the demo homeserver, and prints
 * its sign-in link: one link, the printed user and password, and you are chatting.
 */
import path from "node:path";
import { ELEMENT_WEB_TARBALL, findElementTarball, serveElementWeb, type ElementServer } from "../test/support/element-web";
import { registerUser } from "../test/support/matrix-client";
import { HOME_DOMAIN, PROVIDER_DOMAIN, Stack } from "../test/support/stack";

const DEMO_PASSWORD = "demo-password";

async function main(): Promise<void> {
  const dir = path.resolve(process.env.DEMO_DIR ?? "demo-data");
  process.stderr.write(`demo: starting Synapse, gateway, simulator and bridge (state in ${dir}; the first run installs Synapse, ~3 minutes)\n`);
  const stack = await Stack.start("demo", {
    dir,
    logLevel: "info",
    ports: { homeserver: Number(process.env.DEMO_HS_PORT ?? 8008), appservice: 29400, media: 29401, metrics: 29402, gateway: 29500, sim: 29600 },
    // Another WhatsApp-side peer (your own client, docs/protocol.md §18.1) may host its media on any loopback port.
    bridgeConfig: (c) => (c.network.media.allowed_hosts ??= []).push("127.0.0.1", "localhost"),
  });
  let element: ElementServer | undefined;
  const shutdown = async () => {
    process.stderr.write("\ndemo: stopping\n");
    await element?.stop();
    await stack.stop();
    process.exit(0);
  };
  process.once("SIGINT", () => void shutdown());
  process.once("SIGTERM", () => void shutdown());

  const demo = await registerUser(stack.hs, "demo", { password: DEMO_PASSWORD, displayName: "Demo User" });
  // Talking to the bot makes the demo user known to the network, so WhatsApp users can write.
  const botRoom = await demo.createRoom({ is_direct: true, invite: [stack.botId], preset: "trusted_private_chat" });
  await demo.startSync();
  await demo.waitFor((e) => e.room_id === botRoom && e.sender === stack.botId && e.type === "m.room.message", { timeoutMs: 30_000 });
  // Third-Party Chats are opt-in: the demo user turns them on, as a user would with `enable`.
  await stack.enable(demo, botRoom);
  await demo.stopSync();
  const friends = [
    { phone: "+4915112345678", name: "Anna Schmidt", text: "Hallo! 👋 This is **Anna** on WhatsApp. Third-party chats work!" },
    { phone: "+33612345678", name: "Louis Martin", text: "Bonjour from WhatsApp. Try *italic*, `code` and ~~strike~~ back at me." },
  ];
  for (const f of friends) {
    await stack.sim.createUser(f.phone, f.name);
    await stack.sim.sendText(f.phone, `mimi://${PROVIDER_DOMAIN}/u/${demo.userId}`, f.text);
  }
  if (findElementTarball()) {
    try {
      element = await serveElementWeb({ homeserverUrl: stack.hs.url, serverName: stack.hs.serverName, port: Number(process.env.DEMO_ELEMENT_PORT ?? 29700) });
    } catch (err) {
      // The demo is still useful with another client: say why Element is not served, and go on.
      process.stderr.write(`demo: not serving Element: ${(err as Error).message}\n`);
    }
  }
  const client = element
    ? `  Element:      ${element.loginUrl}   (Element Web, already pointed at this homeserver: open it and sign in)\n`
    : `  Use any Matrix client pointed at the homeserver (Element: "Edit" the homeserver on the sign-in page).\n` +
      `  (To have the demo serve Element itself, set ELEMENT_WEB_DIR to the folder holding ${ELEMENT_WEB_TARBALL}.)\n`;
  process.stdout.write(`
  matrix-interop-bridge demo is running.

${client}
  Log in as:    ${demo.userId}   (username: demo)
  Password:     ${DEMO_PASSWORD}
  Homeserver:   ${stack.hs.url}   (server name: ${stack.hs.serverName})

  What to try:
    - Accept the two chat invites from ${friends.map((f) => `${f.name} (WhatsApp)`).join(" and ")}: they greeted you.
    - Reply with formatting (bold, italic, code); see what they received:
        node dist/sim/cli.js --api ${stack.sim.url} inbox ${friends[0].phone}
    - Make them write again, or send a photo, video, voice note or file:
        node dist/sim/cli.js --api ${stack.sim.url} send ${friends[0].phone} ${demo.userId} "Hi again"
        node dist/sim/cli.js --api ${stack.sim.url} media ${friends[0].phone} ${demo.userId} photo.jpg --caption "Look!"
    - Send them photos, videos, voice messages and files from your client; the inbox shows what arrived.
    - Talk to the bridge bot ${stack.botId}: help, status, list, start ${friends[1].phone}, inbox dedicated
    - Metrics and health: ${stack.metricsUrl}/metrics  ${stack.metricsUrl}/health
  Logs: ${dir}/bridge.log, gateway.log, sim.log.  Stop with Ctrl-C.
`);
  process.stdout.write(peerHowTo(stack, demo.userId));
}

/** How a WhatsApp-side client of your own joins next to the simulator (docs/protocol.md §18.1). */
function peerHowTo(stack: Stack, matrixUser: string): string {
  return `
  Join with your own WhatsApp-side client (docs/protocol.md, §18.1):
    Gateway:        ${stack.gatewayUrl}
    Connect as:     ${HOME_DOMAIN}   secret: ${stack.secrets.homeProviderSecret}   (from ${path.join(stack.dir, "secrets.json")})
    Write to:       mimi://${PROVIDER_DOMAIN}/u/${matrixUser}   (the bridge's provider domain is ${PROVIDER_DOMAIN})
    Your users:     account.upsert mimi://${HOME_DOMAIN}/u/+<number> (not the simulator's), then settings.set thirdPartyChats: true
    Your media:     serve it from 127.0.0.1 or localhost (any port): the bridge's network.media.allowed_hosts allows them
`;
}

main().catch((err: Error) => {
  process.stderr.write(`demo: failed: ${err.message}\n`);
  process.exit(1);
});
