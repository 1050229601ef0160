/* commands: the subcommands of adaptctl, one module each (cmd_*.c). Each takes the arguments
 * after its own name (argv[0] is the subcommand name) and returns the process exit code:
 * 0 success, 1 a fault in the data or the job (named on stderr), 2 bad usage. */
#ifndef ADAPT_COMMANDS_H
#define ADAPT_COMMANDS_H

enum adaptctl_exit {
    ADAPTCTL_EXIT_OK    = 0,
    ADAPTCTL_EXIT_FAULT = 1,
    ADAPTCTL_EXIT_USAGE = 2,
};

int cmd_data_generate(int argc, char **argv);  /* tools/cmd_data_generate.c */
int cmd_data_import(int argc, char **argv);    /* tools/cmd_data_import.c */
int cmd_data_inspect(int argc, char **argv);   /* tools/cmd_data_inspect.c */
int cmd_data_verify(int argc, char **argv);    /* tools/cmd_data_verify.c */
int cmd_tokenize(int argc, char **argv);       /* tools/cmd_tokenize.c */
int cmd_model_info(int argc, char **argv);     /* tools/cmd_model.c */
int cmd_model_init(int argc, char **argv);     /* tools/cmd_model.c */

#endif
