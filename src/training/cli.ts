import { parseArgs } from 'node:util';
import { basename, resolve } from 'node:path';
import { initBackend, type BackendPreference } from '../inference/backend.js';
import { readCsvFile } from '../dataset/read-csv.js';
import { describeCounts } from '../dataset/prepare.js';
import { ModelStore } from '../registry/model-store.js';
import { trainFromTable } from './train.js';
import { saveTrainedVersion } from './save-version.js';
import { formatMetricsTable } from './report.js';

const USAGE = `usage: npm run train -- --data <csv> --label <column> --positive <value>
       [--categorical a,b,c] [--exclude id,other] [--out <model-store>] [--id <version-id>]
       [--seed N] [--epochs N] [--personas K] [--activate] [--replace]
  --personas K fixes the number of learned personas (default: best silhouette for k in 3..6)`;

async function main() {
  const { values } = parseArgs({
    options: {
      data: { type: 'string' },
      label: { type: 'string' },
      positive: { type: 'string' },
      categorical: { type: 'string' },
      exclude: { type: 'string' },
      out: { type: 'string', default: process.env.MODEL_STORE ?? './model-store' },
      id: { type: 'string' },
      seed: { type: 'string', default: '42' },
      epochs: { type: 'string' },
      activate: { type: 'boolean', default: false },
      personas: { type: 'string' },
      replace: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) return void console.log(USAGE);
  const missing = (['data', 'label', 'positive'] as const).filter((k) => !values[k]);
  if (missing.length) throw new UsageError(`missing ${missing.map((m) => '--' + m).join(', ')}`);
  const seed = Number(values.seed);
  if (!Number.isInteger(seed)) throw new UsageError('--seed must be an integer');
  const epochs = values.epochs === undefined ? undefined : Number(values.epochs);
  if (epochs !== undefined && !(Number.isInteger(epochs) && epochs > 0)) throw new UsageError('--epochs must be a positive integer');
  const personas = values.personas === undefined ? undefined : Number(values.personas);
  if (personas !== undefined && !(Number.isInteger(personas) && personas >= 2 && personas <= 20)) throw new UsageError('--personas must be an integer 2..20');
  const list = (s?: string) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : []);

  const backend = await initBackend((process.env.TF_BACKEND as BackendPreference) ?? 'auto');
  const log = (m: string) => process.stderr.write(m + '\n');
  log(`backend ${backend}; reading ${values.data}`);
  const table = readCsvFile(values.data!);
  const categorical = list(values.categorical);
  const result = await trainFromTable(
    table,
    {
      label: values.label!,
      positive: values.positive!,
      categorical,
      exclude: list(values.exclude),
      seed,
      hyperparameters: epochs ? { epochs } : undefined,
    },
    {
      onLog: log,
      onEpoch: (r) => {
        log(`epoch ${String(r.epoch).padStart(3)}  loss ${r.loss.toFixed(4)}  val_loss ${r.validationLoss.toFixed(4)}  val_auc ${r.validationAuc.toFixed(4)}`);
      },
    },
  );
  const c = result.cleaning;
  log(
    `cleaning: read ${c.rowsRead}, dropped ${c.duplicatesDropped} duplicate and ${c.unlabeledDropped} unlabeled rows; ` +
      `blank cells imputed: ${Object.entries(c.blankCells).map(([k, n]) => `${k}=${n}`).join(', ') || 'none'}; ` +
      `label values: ${describeCounts(c.labelValues)}`,
  );
  const store = new ModelStore(resolve(values.out!));
  // --replace rebuilds a version in place (used to regenerate the bundled default model).
  if (values.replace && values.id && store.has(values.id)) store.deleteVersion(values.id);
  const id = await saveTrainedVersion(store, result, { id: values.id, dataset: basename(values.data!), categorical, personas });
  if (values.activate) {
    const state = store.readState();
    if (state.active !== id) {
      state.history.push({ at: new Date().toISOString(), action: 'activate', version: id, previous: state.active, by: 'cli', reason: 'trained with --activate' });
      state.active = id;
      store.writeState(state);
    }
  }
  console.log(formatMetricsTable(result.metrics.test, 'test split'));
  console.log(`version ${id} written to ${store.dir(id)}${values.activate ? ' (active)' : ''}`);
}

class UsageError extends Error {}

main().catch((err) => {
  console.error(`train: ${err instanceof Error ? err.message : String(err)}`);
  if (err instanceof UsageError) console.error(USAGE);
  process.exit(1);
});
