/**
 * The benchmark's results: a list of metrics, printed as a table for people or, with --json,
 * one JSON object per line. A metric that could not be measured has value null and says why;
 * it never gets a number.
 */
import { round } from "./stats";

export interface Metric {
  metric: string;
  /** null: not measured (see `note`). */
  value: number | null;
  unit: string;
  /** The target from the issue, e.g. ">= 0.9"; checked by `met`. */
  target?: { op: ">=" | "<="; value: number };
  /** Context for a person: what the number is made of, or why it is missing. */
  note?: string;
}

export class Report {
  readonly metrics: Metric[] = [];
  readonly notes: string[] = [];

  add(metric: Metric): Metric {
    const rounded = { ...metric, value: metric.value === null ? null : round(metric.value, 2) };
    this.metrics.push(rounded);
    return rounded;
  }

  /** Records a metric that was not measured, with the reason. */
  missing(metric: string, unit: string, reason: string, target?: Metric["target"]): void {
    this.add({ metric, value: null, unit, note: `not measured: ${reason}`, ...(target ? { target } : {}) });
  }

  note(line: string): void {
    this.notes.push(line);
  }

  get(name: string): Metric | undefined {
    return this.metrics.find((m) => m.metric === name);
  }
}

export function met(m: Metric): boolean | undefined {
  if (!m.target || m.value === null) return undefined;
  return m.target.op === ">=" ? m.value >= m.target.value : m.value <= m.target.value;
}

/** One JSON object per line: {"metric", "value", "unit"} plus target/met/note when there are any. */
export function toJsonLines(report: Report): string {
  return report.metrics
    .map((m) => {
      const line: Record<string, unknown> = { metric: m.metric, value: m.value, unit: m.unit };
      if (m.target) {
        line.target = `${m.target.op} ${m.target.value}`;
        line.met = met(m) ?? null;
      }
      if (m.note) line.note = m.note;
      return JSON.stringify(line);
    })
    .join("\n");
}

export function toTable(report: Report): string {
  const rows = report.metrics.map((m) => {
    const verdict = met(m);
    return [
      m.metric,
      m.value === null ? "—" : String(m.value),
      m.unit,
      m.target ? `${m.target.op} ${m.target.value}` : "",
      verdict === undefined ? "" : verdict ? "yes" : "NO",
      m.note ?? "",
    ];
  });
  const header = ["metric", "value", "unit", "target", "met", "note"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (i === 5 ? 0 : r[i].length))));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === 5 ? c : i === 1 ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  const out = [line(header), line(widths.map((w, i) => (i === 5 ? "----" : "-".repeat(w)))), ...rows.map(line)];
  if (report.notes.length) out.push("", ...report.notes);
  return out.join("\n");
}
