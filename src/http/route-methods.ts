/**
 * Which methods each route path answers, so a request with the wrong method gets 405 and an Allow
 * header rather than a 404 (consulted only once the router found nothing).
 */
export class RouteMethods {
  private readonly routes: { pattern: RegExp; methods: Set<string> }[] = [];

  add(method: string | string[], url: string): void {
    const pattern = new RegExp(
      '^' +
        url
          .split('/')
          .map((seg) => (seg.startsWith(':') ? '[^/]+' : seg === '*' ? '.*' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
          .join('/') +
        '$',
    );
    let entry = this.routes.find((r) => r.pattern.source === pattern.source);
    if (!entry) this.routes.push((entry = { pattern, methods: new Set() }));
    for (const m of Array.isArray(method) ? method : [method]) entry.methods.add(m);
  }

  /** `path` as the client sent it: percent-encoding is decoded (except of `/`) as the router does. */
  methodsFor(path: string): string[] {
    let decoded: string;
    try {
      decoded = decodeURIComponent(path.replace(/%2f/gi, '%252F'));
    } catch {
      return [];
    }
    const methods = new Set<string>();
    for (const r of this.routes) if (r.pattern.test(decoded)) for (const m of r.methods) methods.add(m);
    return [...methods].sort();
  }
}
