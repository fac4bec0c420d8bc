export interface FieldIssue {
  path: string;
  message: string;
}

/** An error that maps to a 4xx response with the service's single error body. */
export class AppError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details: FieldIssue[] = [],
  ) {
    super(message);
  }
}

export class ValidationError extends AppError {
  constructor(details: FieldIssue[], message = `${details.length} invalid field${details.length === 1 ? '' : 's'}`) {
    super(400, 'validation_error', message, details);
  }
}

export const notFound = (what: string) => new AppError(404, 'not_found', `${what} not found`);
export const conflict = (message: string) => new AppError(409, 'conflict', message);
export const unavailable = (message: string) => new AppError(503, 'unavailable', message);
