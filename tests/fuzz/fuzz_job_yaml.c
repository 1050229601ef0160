/* fuzz_job_yaml: any bytes through job_yaml_parse and job_yaml_parse_json; a YAML document that
 * converts must print as JSON that reads back to the same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "job_yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *doc = NULL;
    adapt_error err = {0};
    if (job_yaml_parse((const char *)data, size, "f", &doc, &err) == ADAPT_OK) {
        char *a = job_yaml_print(doc);
        cJSON *back = NULL;
        if (a && job_yaml_parse_json(a, strlen(a), "p", &back, &err) != ADAPT_OK) abort();
        char *b = back ? job_yaml_print(back) : NULL;
        if (a && (!b || strcmp(a, b))) abort();
        free(a); free(b); cJSON_Delete(back); cJSON_Delete(doc);
    }
    if (job_yaml_parse_json((const char *)data, size, "j", &doc, &err) == ADAPT_OK) cJSON_Delete(doc);
    return 0;
}
