/**
 * The real server for the tests: `python -m consent_server` (the repository's .venv,
 * the embedded store) on a free loopback port, as the Python end-to-end tests run it.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { createInterface } from "node:readline";

import { ConsentClient, type ConsentClientOptions, DeadlineExceeded, Unavailable } from "../src";

/** The repository root, from dist/test/ or test/. */
const ROOT = path.resolve(
  __dirname,
  __dirname.includes(`${path.sep}dist${path.sep}`) ? "../../../.." : "../../..",
);
// Relative to where npm test was started, like any path given on the command line.
const PYTHON = path.resolve(
  process.env.CONSENT_PYTHON ?? path.join(ROOT, ".venv", "bin", "python"),
);

export class ServerProcess {
  target = "";
  readonly lines: string[] = [];
  private proc: ChildProcess | undefined;

  /** `clientOptions`: how the start-up probe connects (e.g. TLS options). */
  constructor(
    private readonly env: Record<string, string> = {},
    private readonly clientOptions: ConsentClientOptions = {},
  ) {}

  /** Start, wait for the "serving" line, then for a first answered call. */
  async start(timeoutMs = 30000): Promise<this> {
    const env: NodeJS.ProcessEnv = { ...process.env, CONSENT_LOG_LEVEL: "info", ...this.env };
    // The embedded store unless a test names a Redis.
    if (!("CONSENT_REDIS_URL" in this.env)) delete env.CONSENT_REDIS_URL;
    const proc = spawn(PYTHON, ["-m", "consent_server", "--listen", "127.0.0.1:0"], {
      cwd: ROOT,
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    const serving = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`server did not start:\n${this.log()}`)),
        timeoutMs,
      );
      for (const stream of [proc.stdout, proc.stderr]) {
        createInterface({ input: stream! }).on("line", (line) => {
          this.lines.push(line);
          if (!this.target && line.includes('"consent authority serving"')) {
            this.target = JSON.parse(line).address;
            clearTimeout(timer);
            resolve(this.target);
          }
        });
      }
      proc.once("error", (err) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${PYTHON}: ${err.message}`));
      });
      proc.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code} before serving:\n${this.log()}`));
      });
    });
    await serving;
    await this.waitAnswering(timeoutMs);
    return this;
  }

  private async waitAnswering(timeoutMs: number): Promise<void> {
    const client = new ConsentClient(this.target, {
      ...this.clientOptions,
      timeoutMs,
      retries: 50,
      backoff: { initialMs: 20, maximumMs: 200 },
    });
    try {
      await client.checkConsent("acme", "sms", "+12025550100", "startup");
    } catch (e) {
      // Any answer but "not there" means the server is serving (e.g. Unauthenticated).
      if (e instanceof Unavailable || e instanceof DeadlineExceeded) throw e;
    } finally {
      client.close();
    }
  }

  log(): string {
    return this.lines.join("\n");
  }

  /** SIGSTOP: the process keeps its socket but answers nothing. */
  pause(): void {
    this.proc?.kill("SIGSTOP");
  }

  resume(): void {
    this.proc?.kill("SIGCONT");
  }

  /** SIGTERM and wait for the exit (SIGKILL after 15 s). */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill("SIGCONT");
    proc.kill("SIGTERM");
    const timer = setTimeout(() => proc.kill("SIGKILL"), 15000);
    await once(proc, "exit");
    clearTimeout(timer);
  }
}
