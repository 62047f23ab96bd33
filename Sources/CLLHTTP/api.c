/* Additional changes for SwiftNIO:
    - prefixed all symbols by 'spx_'
*/
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "include/spx_llhttp.h"

#define CALLBACK_MAYBE(PARSER, NAME)                                          \
  do {                                                                        \
    const spx_llhttp_settings_t* settings;                                        \
    settings = (const spx_llhttp_settings_t*) (PARSER)->settings;                 \
    if (settings == NULL || settings->NAME == NULL) {                         \
      err = 0;                                                                \
      break;                                                                  \
    }                                                                         \
    err = settings->NAME((PARSER));                                           \
  } while (0)

#define SPAN_CALLBACK_MAYBE(PARSER, NAME, START, LEN)                         \
  do {                                                                        \
    const spx_llhttp_settings_t* settings;                                        \
    settings = (const spx_llhttp_settings_t*) (PARSER)->settings;                 \
    if (settings == NULL || settings->NAME == NULL) {                         \
      err = 0;                                                                \
      break;                                                                  \
    }                                                                         \
    err = settings->NAME((PARSER), (START), (LEN));                           \
    if (err == -1) {                                                          \
      err = SPX_HPE_USER;                                                         \
      spx_llhttp_set_error_reason((PARSER), "Span callback error in " #NAME);     \
    }                                                                         \
  } while (0)

void spx_llhttp_init(spx_llhttp_t* parser, spx_llhttp_type_t type,
                 const spx_llhttp_settings_t* settings) {
  spx_llhttp__internal_init(parser);

  parser->type = type;
  parser->settings = (void*) settings;
}


#if defined(__wasm__)

extern int wasm_on_message_begin(spx_llhttp_t * p);
extern int wasm_on_url(spx_llhttp_t* p, const char* at, size_t length);
extern int wasm_on_status(spx_llhttp_t* p, const char* at, size_t length);
extern int wasm_on_header_field(spx_llhttp_t* p, const char* at, size_t length);
extern int wasm_on_header_value(spx_llhttp_t* p, const char* at, size_t length);
extern int wasm_on_headers_complete(spx_llhttp_t * p, int status_code,
                                    uint8_t upgrade, int should_keep_alive);
extern int wasm_on_body(spx_llhttp_t* p, const char* at, size_t length);
extern int wasm_on_message_complete(spx_llhttp_t * p);

static int wasm_on_headers_complete_wrap(spx_llhttp_t* p) {
  return wasm_on_headers_complete(p, p->status_code, p->upgrade,
                                  spx_llhttp_should_keep_alive(p));
}

const spx_llhttp_settings_t wasm_settings = {
  .on_message_begin = wasm_on_message_begin,
  .on_url = wasm_on_url,
  .on_status = wasm_on_status,
  .on_header_field = wasm_on_header_field,
  .on_header_value = wasm_on_header_value,
  .on_headers_complete = wasm_on_headers_complete_wrap,
  .on_body = wasm_on_body,
  .on_message_complete = wasm_on_message_complete,
};


spx_llhttp_t* spx_llhttp_alloc(spx_llhttp_type_t type) {
  spx_llhttp_t* parser = malloc(sizeof(spx_llhttp_t));
  spx_llhttp_init(parser, type, &wasm_settings);
  return parser;
}

void spx_llhttp_free(spx_llhttp_t* parser) {
  free(parser);
}

#endif  // defined(__wasm__)

/* Some getters required to get stuff from the parser */

uint8_t spx_llhttp_get_type(spx_llhttp_t* parser) {
  return parser->type;
}

uint8_t spx_llhttp_get_http_major(spx_llhttp_t* parser) {
  return parser->http_major;
}

uint8_t spx_llhttp_get_http_minor(spx_llhttp_t* parser) {
  return parser->http_minor;
}

uint8_t spx_llhttp_get_method(spx_llhttp_t* parser) {
  return parser->method;
}

int spx_llhttp_get_status_code(spx_llhttp_t* parser) {
  return parser->status_code;
}

uint8_t spx_llhttp_get_upgrade(spx_llhttp_t* parser) {
  return parser->upgrade;
}


void spx_llhttp_reset(spx_llhttp_t* parser) {
  spx_llhttp_type_t type = parser->type;
  const spx_llhttp_settings_t* settings = parser->settings;
  void* data = parser->data;
  uint16_t lenient_flags = parser->lenient_flags;

  spx_llhttp__internal_init(parser);

  parser->type = type;
  parser->settings = (void*) settings;
  parser->data = data;
  parser->lenient_flags = lenient_flags;
}


spx_llhttp_errno_t spx_llhttp_execute(spx_llhttp_t* parser, const char* data, size_t len) {
  return spx_llhttp__internal_execute(parser, data, data + len);
}


void spx_llhttp_settings_init(spx_llhttp_settings_t* settings) {
  memset(settings, 0, sizeof(*settings));
}


spx_llhttp_errno_t spx_llhttp_finish(spx_llhttp_t* parser) {
  int err;

  /* We're in an error state. Don't bother doing anything. */
  if (parser->error != 0) {
    return 0;
  }

  switch (parser->finish) {
    case SPX_HTTP_FINISH_SAFE_WITH_CB:
      CALLBACK_MAYBE(parser, on_message_complete);
      if (err != SPX_HPE_OK) return err;

    /* FALLTHROUGH */
    case SPX_HTTP_FINISH_SAFE:
      return SPX_HPE_OK;
    case SPX_HTTP_FINISH_UNSAFE:
      parser->reason = "Invalid EOF state";
      return SPX_HPE_INVALID_EOF_STATE;
    default:
      abort();
  }
}


void spx_llhttp_pause(spx_llhttp_t* parser) {
  if (parser->error != SPX_HPE_OK) {
    return;
  }

  parser->error = SPX_HPE_PAUSED;
  parser->reason = "Paused";
}


void spx_llhttp_resume(spx_llhttp_t* parser) {
  if (parser->error != SPX_HPE_PAUSED) {
    return;
  }

  parser->error = 0;
}


void spx_llhttp_resume_after_upgrade(spx_llhttp_t* parser) {
  if (parser->error != SPX_HPE_PAUSED_UPGRADE) {
    return;
  }

  parser->error = 0;
}


spx_llhttp_errno_t spx_llhttp_get_errno(const spx_llhttp_t* parser) {
  return parser->error;
}


const char* spx_llhttp_get_error_reason(const spx_llhttp_t* parser) {
  return parser->reason;
}


void spx_llhttp_set_error_reason(spx_llhttp_t* parser, const char* reason) {
  parser->reason = reason;
}


const char* spx_llhttp_get_error_pos(const spx_llhttp_t* parser) {
  return parser->error_pos;
}


const char* spx_llhttp_errno_name(spx_llhttp_errno_t err) {
#define SPX_HTTP_ERRNO_GEN(CODE, NAME, _) case SPX_HPE_##NAME: return "SPX_HPE_" #NAME;
  switch (err) {
    SPX_HTTP_ERRNO_MAP(SPX_HTTP_ERRNO_GEN)
    default: abort();
  }
#undef SPX_HTTP_ERRNO_GEN
}


const char* spx_llhttp_method_name(spx_llhttp_method_t method) {
#define SPX_HTTP_METHOD_GEN(NUM, NAME, STRING) case SPX_HTTP_##NAME: return #STRING;
  switch (method) {
    SPX_HTTP_ALL_METHOD_MAP(SPX_HTTP_METHOD_GEN)
    default: abort();
  }
#undef SPX_HTTP_METHOD_GEN
}

const char* spx_llhttp_status_name(spx_llhttp_status_t status) {
#define SPX_HTTP_STATUS_GEN(NUM, NAME, STRING) case SPX_HTTP_STATUS_##NAME: return #STRING;
  switch (status) {
    SPX_HTTP_STATUS_MAP(SPX_HTTP_STATUS_GEN)
    default: abort();
  }
#undef SPX_HTTP_STATUS_GEN
}


void spx_llhttp_set_lenient_headers(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_HEADERS;
  } else {
    parser->lenient_flags &= ~LENIENT_HEADERS;
  }
}


void spx_llhttp_set_lenient_chunked_length(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_CHUNKED_LENGTH;
  } else {
    parser->lenient_flags &= ~LENIENT_CHUNKED_LENGTH;
  }
}


void spx_llhttp_set_lenient_keep_alive(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_KEEP_ALIVE;
  } else {
    parser->lenient_flags &= ~LENIENT_KEEP_ALIVE;
  }
}

void spx_llhttp_set_lenient_transfer_encoding(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_TRANSFER_ENCODING;
  } else {
    parser->lenient_flags &= ~LENIENT_TRANSFER_ENCODING;
  }
}

void spx_llhttp_set_lenient_version(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_VERSION;
  } else {
    parser->lenient_flags &= ~LENIENT_VERSION;
  }
}

void spx_llhttp_set_lenient_data_after_close(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_DATA_AFTER_CLOSE;
  } else {
    parser->lenient_flags &= ~LENIENT_DATA_AFTER_CLOSE;
  }
}

void spx_llhttp_set_lenient_optional_lf_after_cr(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_OPTIONAL_LF_AFTER_CR;
  } else {
    parser->lenient_flags &= ~LENIENT_OPTIONAL_LF_AFTER_CR;
  }
}

void spx_llhttp_set_lenient_optional_crlf_after_chunk(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_OPTIONAL_CRLF_AFTER_CHUNK;
  } else {
    parser->lenient_flags &= ~LENIENT_OPTIONAL_CRLF_AFTER_CHUNK;
  }
}

void spx_llhttp_set_lenient_optional_cr_before_lf(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_OPTIONAL_CR_BEFORE_LF;
  } else {
    parser->lenient_flags &= ~LENIENT_OPTIONAL_CR_BEFORE_LF;
  }
}

void spx_llhttp_set_lenient_spaces_after_chunk_size(spx_llhttp_t* parser, int enabled) {
  if (enabled) {
    parser->lenient_flags |= LENIENT_SPACES_AFTER_CHUNK_SIZE;
  } else {
    parser->lenient_flags &= ~LENIENT_SPACES_AFTER_CHUNK_SIZE;
  }
}

/* Callbacks */


int spx_llhttp__on_message_begin(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_message_begin);
  return err;
}


int spx_llhttp__on_protocol(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_protocol, p, endp - p);
  return err;
}


int spx_llhttp__on_protocol_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_protocol_complete);
  return err;
}


int spx_llhttp__on_url(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_url, p, endp - p);
  return err;
}


int spx_llhttp__on_url_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_url_complete);
  return err;
}


int spx_llhttp__on_status(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_status, p, endp - p);
  return err;
}


int spx_llhttp__on_status_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_status_complete);
  return err;
}


int spx_llhttp__on_method(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_method, p, endp - p);
  return err;
}


int spx_llhttp__on_method_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_method_complete);
  return err;
}


int spx_llhttp__on_version(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_version, p, endp - p);
  return err;
}


int spx_llhttp__on_version_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_version_complete);
  return err;
}


int spx_llhttp__on_header_field(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_header_field, p, endp - p);
  return err;
}


int spx_llhttp__on_header_field_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_header_field_complete);
  return err;
}


int spx_llhttp__on_header_value(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_header_value, p, endp - p);
  return err;
}


int spx_llhttp__on_header_value_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_header_value_complete);
  return err;
}


int spx_llhttp__on_headers_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_headers_complete);
  return err;
}


int spx_llhttp__on_message_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_message_complete);
  return err;
}


int spx_llhttp__on_body(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_body, p, endp - p);
  return err;
}


int spx_llhttp__on_chunk_header(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_chunk_header);
  return err;
}


int spx_llhttp__on_chunk_extension_name(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_chunk_extension_name, p, endp - p);
  return err;
}


int spx_llhttp__on_chunk_extension_name_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_chunk_extension_name_complete);
  return err;
}


int spx_llhttp__on_chunk_extension_value(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  SPAN_CALLBACK_MAYBE(s, on_chunk_extension_value, p, endp - p);
  return err;
}


int spx_llhttp__on_chunk_extension_value_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_chunk_extension_value_complete);
  return err;
}


int spx_llhttp__on_chunk_complete(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_chunk_complete);
  return err;
}


int spx_llhttp__on_reset(spx_llhttp_t* s, const char* p, const char* endp) {
  int err;
  CALLBACK_MAYBE(s, on_reset);
  return err;
}


/* Private */


void spx_llhttp__debug(spx_llhttp_t* s, const char* p, const char* endp,
                   const char* msg) {
  if (p == endp) {
    fprintf(stderr, "p=%p type=%d flags=%02x next=null debug=%s\n", s, s->type,
            s->flags, msg);
  } else {
    fprintf(stderr, "p=%p type=%d flags=%02x next=%02x   debug=%s\n", s,
            s->type, s->flags, *p, msg);
  }
}
