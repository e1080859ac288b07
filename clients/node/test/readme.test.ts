/** The README's "Check and send" example runs as written against the real server. */

import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import ts from "typescript";

import { ServerProcess } from "./server";

const NODE_DIR = path.resolve(__dirname, "../..");

/** The first ```ts block after the "## Check and send" heading. */
function example(): string {
  const readme = readFileSync(path.join(NODE_DIR, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Check and send"));
  const match = /```ts\n([\s\S]*?)```/.exec(section);
  assert.ok(match, "no ts block under 'Check and send'");
  return match[1];
}

const server = new ServerProcess();
before(async () => {
  await server.start();
});
after(async () => {
  await server.stop();
});

test("the check-and-send example is at most ten lines of calls and queues a message", async (t) => {
  const code = example();
  const lines = code.split("\n").filter((l) => l.trim() && !l.startsWith("import "));
  assert.ok(lines.length <= 13, `the example grew to ${lines.length} lines`);

  // The README imports the package by name and awaits at the top level (ESM); here it
  // runs as CommonJS inside an async function, against this test's server.
  const imports = code.split("\n").filter((l) => l.startsWith("import "));
  const body = code
    .split("\n")
    .filter((l) => !l.startsWith("import "))
    .join("\n");
  const source = [
    ...imports.map((l) =>
      l.replace('"consent-client"', JSON.stringify(path.resolve(__dirname, "../src"))),
    ),
    "export async function main(): Promise<void> {",
    body.replaceAll('"127.0.0.1:50051"', JSON.stringify(server.target)),
    "}",
  ].join("\n");
  const dir = mkdtempSync(path.join(tmpdir(), "consent-readme-"));
  try {
    // Type-checked as strictly as the client itself, then run.
    const tsFile = path.join(dir, "example.ts");
    writeFileSync(tsFile, source);
    const options: ts.CompilerOptions = {
      strict: true,
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2022,
      esModuleInterop: true,
      skipLibCheck: true,
      types: ["node"],
      typeRoots: [path.join(NODE_DIR, "node_modules", "@types")],
      outDir: dir,
    };
    const program = ts.createProgram([tsFile], options);
    const diagnostics = ts
      .getPreEmitDiagnostics(program)
      .map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
    assert.deepEqual(diagnostics, []);
    const file = path.join(dir, "example.js");
    writeFileSync(file, ts.transpileModule(source, { compilerOptions: options }).outputText);
    const logged: unknown[][] = [];
    t.mock.method(console, "log", (...args: unknown[]) => logged.push(args));
    const saved = process.env.CONSENT_API_KEY;
    delete process.env.CONSENT_API_KEY;
    try {
      await (require(file) as { main(): Promise<void> }).main();
    } finally {
      if (saved !== undefined) process.env.CONSENT_API_KEY = saved;
    }
    assert.equal(logged.length, 1, JSON.stringify(logged));
    assert.equal(logged[0][0], "queued");
    assert.match(String(logged[0][1]), /\S/, "a message id");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
