import assert from "node:assert/strict";
import { test } from "node:test";
import { KeyedQueue } from "../../src/util/keyed-queue";

/** A promise with its resolve and reject handed out, so a test decides when a task ends. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void; reject: (err: unknown) => void } {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

test("keyed queue runs one key's tasks one after another, in the order they were queued", async () => {
  const queue = new KeyedQueue();
  const events: string[] = [];
  const first = deferred();
  const a = queue.run("chat", async () => {
    events.push("a start");
    await first.promise;
    events.push("a end");
    return "a";
  });
  const b = queue.run("chat", async () => {
    events.push("b start");
    return "b";
  });
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(events, ["a start"], "b waits while a runs");
  first.resolve();
  assert.deepEqual(await Promise.all([a, b]), ["a", "b"]);
  assert.deepEqual(events, ["a start", "a end", "b start"]);
});

test("keyed queue runs different keys side by side", async () => {
  const queue = new KeyedQueue();
  const blocker = deferred();
  const slow = queue.run("one", () => blocker.promise.then(() => "one"));
  // "two" finishes while "one" is still blocked: keys do not wait for each other.
  assert.equal(await queue.run("two", async () => "two"), "two");
  blocker.resolve();
  assert.equal(await slow, "one");
});

test("keyed queue hands a task's failure to its caller and still runs the next task of that key", async () => {
  const queue = new KeyedQueue();
  const failing = queue.run("chat", async () => {
    throw new Error("boom");
  });
  const next = queue.run("chat", async () => "after");
  await assert.rejects(failing, /boom/);
  assert.equal(await next, "after");
});

test("keyed queue forgets a key once its tasks are done, and counts keys with work", async () => {
  const queue = new KeyedQueue();
  assert.equal(queue.size, 0);
  const gate = deferred();
  const a = queue.run("a", () => gate.promise);
  const b1 = queue.run("b", async () => undefined);
  const b2 = queue.run("b", async () => undefined);
  assert.equal(queue.size, 2, "one entry per key, however many tasks");
  await Promise.all([b1, b2]);
  await queue.run("c", async () => undefined);
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(queue.size, 1, "only a is still busy");
  gate.resolve();
  await a;
  await queue.idle();
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(queue.size, 0);
});

test("keyed queue idle waits for every key's queued tasks, failures included", async () => {
  const queue = new KeyedQueue();
  const done: string[] = [];
  const gateA = deferred();
  const gateB = deferred();
  void queue.run("a", () => gateA.promise.then(() => void done.push("a")));
  void queue.run("b", () => gateB.promise.then(() => void done.push("b"))).catch(() => undefined);
  let idle = false;
  const waiting = queue.idle().then(() => {
    idle = true;
  });
  gateA.resolve();
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.equal(idle, false, "b is still running");
  gateB.reject(new Error("b failed"));
  await waiting;
  assert.deepEqual(done, ["a"]);
  assert.equal(idle, true);
});

test("keyed queue keeps the order when older tasks of a key finish while a newer one still runs", async () => {
  const queue = new KeyedQueue();
  const events: string[] = [];
  const gateB = deferred();
  await queue.run("chat", async () => void events.push("a"));
  const b = queue.run("chat", async () => {
    events.push("b start");
    await gateB.promise;
    events.push("b end");
  });
  // a's clean-up has run by now; it must not have dropped b's place in the queue.
  await new Promise<void>((resolve) => setImmediate(resolve));
  const c = queue.run("chat", async () => void events.push("c"));
  await new Promise<void>((resolve) => setImmediate(resolve));
  assert.deepEqual(events, ["a", "b start"], "c waits for b");
  gateB.resolve();
  await Promise.all([b, c]);
  assert.deepEqual(events, ["a", "b start", "b end", "c"]);
});
