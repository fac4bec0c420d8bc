import type { Prediction } from '../inference/scorer.js';

/**
 * Answers of the predict routes as JSON, byte for byte what JSON.stringify writes for them (a
 * property test holds it to that), built from parts: JSON.stringify's generic walk over the
 * answer costs about three times as much, on the hottest route. The field order is the one
 * Scorer.toPrediction creates.
 */
export function predictionJson(p: Prediction): string {
  // Rare shapes (an explanation, a non-finite number, which JSON writes as null, anything
  // unexpected in persona) take the generic path.
  if (p.explanation !== undefined || !Number.isFinite(p.probability) || !Number.isFinite(p.threshold) || typeof p.persona !== 'object') return JSON.stringify(p);
  return (
    '{"probability":' +
    p.probability +
    ',"label":' +
    p.label +
    ',"threshold":' +
    p.threshold +
    ',"modelVersion":' +
    stringJson(p.modelVersion) +
    ',"cached":' +
    p.cached +
    ',"warnings":' +
    (p.warnings.length === 0 ? '[]' : JSON.stringify(p.warnings)) +
    ',"persona":' +
    personaJson(p.persona) +
    '}'
  );
}

/** `{ modelVersion, predictions }` of the batch route. */
export function batchJson(answer: { modelVersion: string; predictions: Prediction[] }): string {
  const parts = new Array<string>(answer.predictions.length);
  for (let i = 0; i < parts.length; i++) parts[i] = predictionJson(answer.predictions[i]);
  return '{"modelVersion":' + stringJson(answer.modelVersion) + ',"predictions":[' + parts.join(',') + ']}';
}

// Version ids repeat on every answer; their JSON is kept for the last one seen.
let lastString = '';
let lastStringJson = '""';
function stringJson(s: string): string {
  if (s !== lastString) {
    lastStringJson = JSON.stringify(s);
    lastString = s;
  }
  return lastStringJson;
}

// Personas are shared objects of a loaded version (LoadedModel.personaOf), so their JSON is kept per object.
const personaText = new WeakMap<object, string>();
function personaJson(persona: Prediction['persona']): string {
  if (persona === null) return 'null';
  let json = personaText.get(persona);
  if (json === undefined) {
    json = JSON.stringify(persona);
    personaText.set(persona, json);
  }
  return json;
}
