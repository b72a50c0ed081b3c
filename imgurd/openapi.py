"""The OpenAPI 3 description of the REST API (served at /v1/openapi.json, checked by tests)."""

from typing import Any, Dict

from . import __version__


def _error(description: str, headers: Dict[str, Any] = None) -> Dict[str, Any]:
    response: Dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def document(config) -> Dict[str, Any]:
    """The document, with this server's limits filled in."""
    secured = bool(config.api_token)
    unauthorized = {"401": _error("Missing or wrong bearer token (only when api_token is set).")}
    retry_after = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                   "schema": {"type": "integer", "minimum": 0}}}
    unread = _error("Large answers (job reports, link lists) of 256 MiB in all are still waiting to be read by "
                    "their clients: this one (64 KiB or more) is refused until they are.", retry_after)
    image = {
        "type": "object",
        "required": ["url", "status", "link", "error"],
        "properties": {
            "url": {"type": "string", "description": "The source URL as submitted (first occurrence)."},
            "status": {"type": "string", "enum": ["pending", "in-progress", "complete", "failed"]},
            "link": {"type": ["string", "null"], "description": "The Imgur link, once complete."},
            "error": {"type": ["string", "null"], "description": "Why it failed, one line."},
        },
    }
    job = {
        "type": "object",
        "required": ["id", "created", "finished", "status", "uploaded", "images", "waiting"],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "created": {"type": "string", "format": "date-time"},
            "finished": {"type": ["string", "null"], "format": "date-time"},
            "status": {"type": "string", "enum": ["pending", "in-progress", "complete"]},
            "uploaded": {
                "type": "object",
                "required": ["pending", "complete", "failed"],
                "properties": {
                    "pending": {"type": "array", "items": {"type": "string"}},
                    "complete": {"type": "array", "items": {"type": "string"}},
                    "failed": {"type": "array", "items": {"type": "string"}},
                },
            },
            "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
            "waiting": {
                "description": "While a spent Imgur budget (or a pause Imgur asked for) holds the job's unfinished "
                               "URLs: why, and until when. They stay pending: waiting is not a failure.",
                "oneOf": [
                    {"type": "null"},
                    {"type": "object", "required": ["reason", "until"],
                     "properties": {
                         "reason": {"type": "string"},
                         "until": {"type": "string", "format": "date-time"},
                         "budget": {"type": "string", "description": "Which one, in a few words "
                                                                     "(e.g. 'hourly budget')."}}},
                ],
            },
        },
    }
    doc: Dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "imgurd",
            "version": __version__,
            "description": "Re-upload images from their URLs to Imgur, in the background.",
        },
        "paths": {
            "/v1/images/upload": {
                "post": {
                    "summary": "Submit a job of image URLs",
                    "operationId": "submitJob",
                    "parameters": [{
                        "name": "Idempotency-Key", "in": "header", "required": False,
                        "description": "A repeated POST with the same key and the same URLs answers the first "
                                       "job's id (while that job is retained); the same key with other URLs "
                                       "answers 422.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                    }],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {
                            "type": "object",
                            "required": ["urls"],
                            "properties": {"urls": {
                                "type": "array", "minItems": 1, "maxItems": config.max_urls_per_job,
                                "items": {"type": "string", "format": "uri",
                                          "description": "An absolute http or https URL with a host."},
                            }},
                        }}},
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted; the job runs in the background.",
                            "headers": {"Location": {"description": "/v1/images/upload/{jobId}",
                                                     "schema": {"type": "string"}}},
                            "content": {"application/json": {"schema": {
                                "type": "object", "required": ["jobId"],
                                "properties": {"jobId": {"type": "string", "format": "uuid"}},
                            }}},
                            "links": {
                                "getJob": {"operationId": "getJob", "parameters": {"jobId": "$response.body#/jobId"},
                                           "description": "The job's report."},
                            },
                        },
                        "400": _error("Not JSON, not an object, or urls missing, empty, or holding an invalid entry "
                                      "(the message names the first offending entry and its index)."),
                        **unauthorized,
                        "413": _error("Body over max_body_bytes (%d) or more than max_urls_per_job (%d) URLs."
                                      % (config.max_body_bytes, config.max_urls_per_job)),
                        "422": _error("The Idempotency-Key was already used for a job with other URLs."),
                        "503": _error("Accepting the job would exceed max_queued_urls (%d) unfinished URLs."
                                      % config.max_queued_urls, retry_after),
                    },
                },
            },
            "/v1/images/upload/{jobId}": {
                "get": {
                    "summary": "What became of every URL of a job",
                    "operationId": "getJob",
                    "parameters": [{"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The job.", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Job"}}}},
                        **unauthorized,
                        "404": _error("Unknown, malformed or evicted job id."),
                        "503": unread,
                    },
                },
            },
            "/v1/images": {
                "get": {
                    "summary": "Every Imgur link uploaded by this process, oldest first",
                    "operationId": "listImages",
                    "parameters": [
                        {"name": "offset", "in": "query", "required": False,
                         "description": "Links to skip (default 0); past the end gives an empty page.",
                         "schema": {"type": "integer", "minimum": 0}},
                        {"name": "limit", "in": "query", "required": False,
                         "description": "Most links to return (default: all).",
                         "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "responses": {
                        "200": {"description": "The links.", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["uploaded", "total"],
                            "properties": {
                                "uploaded": {"type": "array", "items": {"type": "string"}},
                                "total": {"type": "integer", "minimum": 0,
                                          "description": "How many links there are in all, whatever the page."},
                            },
                        }}}},
                        "400": _error("offset or limit is not a non-negative integer."),
                        **unauthorized,
                        "503": unread,
                    },
                },
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": {"description": "OpenAPI 3 document.",
                                          "content": {"application/json": {"schema": {"type": "object"}}}},
                                  **unauthorized},
                },
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "operationId": "health",
                    "security": [],
                    "responses": {"200": {"description": "Serving.", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": ["ok"]}},
                    }}}}},
                },
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "security": [],
                    "responses": {"200": {"description": "Prometheus text exposition.",
                                          "content": {"text/plain": {"schema": {"type": "string"}}}}},
                },
            },
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {
                              "error": {"type": "string", "description": "One sentence, for people."},
                              # the limit an answer ran into, for programs (413, 503)
                              "max_body_bytes": {"type": "integer",
                                                 "description": "413: the body limit (max_body_bytes)."},
                              "max_urls_per_job": {"type": "integer",
                                                   "description": "413: URLs one job may hold."},
                              "max_queued_urls": {"type": "integer",
                                                  "description": "503: unfinished URLs the backlog may hold."},
                              "queued_urls": {"type": "integer",
                                              "description": "503: unfinished URLs in the backlog now."},
                              "max_retained_bytes": {"type": "integer",
                                                     "description": "503: bytes of job data that may be held."},
                          }},
                "Image": image,
                "Job": job,
            },
        },
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc
