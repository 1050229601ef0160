/* cmd_data_inspect: placeholder until its module lands (being written in this session). */
#include "commands.h"
#include <stdio.h>
int cmd_data_inspect(int argc, char **argv) { (void)argc; fprintf(stderr, "adaptctl %s: not built yet\n", argv[0]); return ADAPTCTL_EXIT_FAULT; }
