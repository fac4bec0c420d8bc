import type { ClassificationMetrics } from './metrics.js';

export function formatMetricsTable(m: ClassificationMetrics, title: string): string {
  const rows: [string, string][] = [
    ['rows', `${m.n} (${m.positives} positive)`],
    ['AUC', m.auc.toFixed(4)],
    ['threshold', m.threshold.toFixed(3)],
    ['accuracy', m.accuracy.toFixed(4)],
    ['precision', m.precision.toFixed(4)],
    ['recall', m.recall.toFixed(4)],
    ['F1', m.f1.toFixed(4)],
    ['Brier', m.brier.toFixed(4)],
    ['log loss', m.logLoss.toFixed(4)],
  ];
  const lines = [`metrics on ${title}`, ...rows.map(([k, v]) => `  ${k.padEnd(10)} ${v}`), '  calibration (bin: n, mean predicted → observed)'];
  for (const b of m.calibration) if (b.count) lines.push(`    ${b.bin}: ${String(b.count).padStart(5)}  ${b.meanPredicted.toFixed(3)} → ${b.observedRate.toFixed(3)}`);
  return lines.join('\n');
}
