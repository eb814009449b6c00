// What every browser-test script shares: its arguments, and the line protocol with the Rust test
// (server/tests/browser.rs): the script prints `STEP <name>` when the page is ready for the next
// act, the test answers `GO <name> <args…>` once it acted; `DONE` ends a good run, `FAIL <why>` a
// bad one.

import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';

/** `[base URL, screenshot folder]` from the command line (the folder is created). */
export function args(script) {
  const [base, shots] = process.argv.slice(2);
  if (!base || !shots) {
    console.log(`FAIL usage: node ${script} <base-url> <screenshot-dir>`);
    process.exit(2);
  }
  mkdirSync(shots, { recursive: true });
  return [base, shots];
}

const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (line) => waiting.shift()?.(line.trim()));

/** Stops reading the test's answers, so the script can exit. */
export function finish() {
  lines.close();
}

/** Announces a step and waits for the test's `GO <name> …`; returns its arguments. */
export async function step(name) {
  console.log(`STEP ${name}`);
  const line = await new Promise((resolve) => waiting.push(resolve));
  const [go, got, ...args] = line.split(/\s+/);
  if (go !== 'GO' || got !== name) throw new Error(`expected GO ${name}, got ${line}`);
  return args;
}
