#include "CWorkerIO.h"
#include <curl/curl.h>
#include <pthread.h>

/* One CURLSH for the process: the DNS cache and TLS sessions, shared by every worker loop's
 * multi handle and the shared curl thread (connections are not: each stays on its thread).
 * libcurl asks for a lock per kind of data it shares; a mutex each. */

static pthread_mutex_t spx_share_locks[CURL_LOCK_DATA_LAST];
static CURLSH *spx_share;
static pthread_once_t spx_share_once = PTHREAD_ONCE_INIT;

static void spx_share_lock(CURL *handle, curl_lock_data data, curl_lock_access access, void *user) {
    (void)handle; (void)access; (void)user;
    pthread_mutex_lock(&spx_share_locks[data]);
}

static void spx_share_unlock(CURL *handle, curl_lock_data data, void *user) {
    (void)handle; (void)user;
    pthread_mutex_unlock(&spx_share_locks[data]);
}

static void spx_share_make(void) {
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&spx_share_locks[i], NULL);
    CURLSH *share = curl_share_init();
    if (share == NULL) return;
    curl_share_setopt(share, CURLSHOPT_LOCKFUNC, spx_share_lock);
    curl_share_setopt(share, CURLSHOPT_UNLOCKFUNC, spx_share_unlock);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    spx_share = share;
}

void *spx_curl_share(void) {
    pthread_once(&spx_share_once, spx_share_make);
    return spx_share;
}
