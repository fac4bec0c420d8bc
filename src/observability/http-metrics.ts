import { Histogram, type LabelValues, type Registry } from 'prom-client';

type Label = 'method' | 'route' | 'status_code';

/** Seconds; from well under a cached prediction to a large export or upload. */
const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

interface Series {
  labels: Record<Label, string>;
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * `http_request_duration_seconds{method,route,status_code}`: every answered request, by route
 * template ("unmatched" for 404s without a route), so request rates, error rates and latency per
 * route come from one histogram. Counted in plain arrays on the request path, because
 * prom-client's observe() hashes and validates its labels on every call, and reported as a
 * Prometheus histogram when scraped.
 */
export class HttpRequestMetrics {
  /** route → method → status → series: keyed by the strings as they come, with nothing built per request. */
  private readonly series = new Map<string, Map<string, Map<number, Series>>>();

  constructor(registry: Registry) {
    const snapshot = () => this.values();
    const name = 'http_request_duration_seconds';
    const help = 'HTTP requests answered, by method, route template and status code, and how long they took';
    // A Histogram (so the registry writes its HELP and TYPE as for any other) whose values are ours:
    // get() for the JSON form; the registry writes the text form from getForPromString when a
    // metric has one (prom-client's histograms do), so that one answers the same.
    type Answer = Awaited<ReturnType<Histogram<Label>['get']>>;
    const answer = () => ({ name, help, type: 'histogram', aggregator: 'sum', values: snapshot() }) as unknown as Answer;
    class Precounted extends Histogram<Label> {
      override async get() {
        return answer();
      }

      async getForPromString() {
        return answer();
      }
    }
    new Precounted({ name, help, labelNames: ['method', 'route', 'status_code'], buckets: BUCKETS, registers: [registry] });
  }

  observe(method: string, route: string | undefined, status: number, seconds: number): void {
    const template = route ?? 'unmatched';
    let byMethod = this.series.get(template);
    if (!byMethod) this.series.set(template, (byMethod = new Map()));
    let byStatus = byMethod.get(method);
    if (!byStatus) byMethod.set(method, (byStatus = new Map()));
    let s = byStatus.get(status);
    if (!s) {
      s = { labels: { method, route: template, status_code: String(status) }, counts: new Float64Array(BUCKETS.length + 1), sum: 0, count: 0 };
      byStatus.set(status, s);
    }
    let b = 0;
    while (b < BUCKETS.length && seconds > BUCKETS[b]) b++;
    s.counts[b]++;
    s.sum += seconds;
    s.count++;
  }

  private values(): { value: number; labels: LabelValues<Label>; metricName: string }[] {
    // Bucket series carry `le` too, as prom-client's own histograms do (its types leave it out).
    const out: { value: number; labels: LabelValues<Label>; metricName: string }[] = [];
    for (const byMethod of this.series.values()) {
      for (const s of [...byMethod.values()].flatMap((byStatus) => [...byStatus.values()])) {
        let cumulative = 0;
        BUCKETS.forEach((le, b) => {
          cumulative += s.counts[b];
          out.push({ value: cumulative, labels: { ...s.labels, le } as LabelValues<Label>, metricName: 'http_request_duration_seconds_bucket' });
        });
        out.push({ value: s.count, labels: { ...s.labels, le: '+Inf' } as LabelValues<Label>, metricName: 'http_request_duration_seconds_bucket' });
        out.push({ value: s.sum, labels: s.labels, metricName: 'http_request_duration_seconds_sum' });
        out.push({ value: s.count, labels: s.labels, metricName: 'http_request_duration_seconds_count' });
      }
    }
    return out;
  }
}
