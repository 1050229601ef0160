/* commands: the subcommands of adaptctl, one module each (cmd_*.c). Each takes the arguments
 * after its own name (argv[0] is the subcommand name) and returns the process exit code:
 * 0 success, 1 a fault in the data or the job (named on stderr), 2 bad usage; the job commands
 * (cmd_job.c) add 3, 4, 5 for what happened between adaptctl and adaptd. */
#ifndef ADAPT_COMMANDS_H
#define ADAPT_COMMANDS_H

enum adaptctl_exit {
    ADAPTCTL_EXIT_OK    = 0,
    ADAPTCTL_EXIT_FAULT = 1,
    ADAPTCTL_EXIT_USAGE = 2,
    ADAPTCTL_EXIT_UNREACHABLE = 3,  /* adaptd cannot be reached or stopped answering */
    ADAPTCTL_EXIT_REFUSED     = 4,  /* adaptd answered 4xx (bad spec, no such job, no token) */
    ADAPTCTL_EXIT_SERVER      = 5,  /* adaptd answered 5xx or something unreadable */
};

int cmd_data_generate(int argc, char **argv);  /* tools/cmd_data_generate.c */
int cmd_data_import(int argc, char **argv);    /* tools/cmd_data_import.c */
int cmd_data_inspect(int argc, char **argv);   /* tools/cmd_data_inspect.c */
int cmd_data_verify(int argc, char **argv);    /* tools/cmd_data_verify.c */
int cmd_tokenize(int argc, char **argv);       /* tools/cmd_tokenize.c */
int cmd_model_info(int argc, char **argv);     /* tools/cmd_model.c */
int cmd_model_init(int argc, char **argv);     /* tools/cmd_model.c */
int cmd_model_generate(int argc, char **argv); /* tools/cmd_model.c */
/* adaptd's jobs (tools/cmd_job.c) */
int cmd_job_submit(int argc, char **argv);
int cmd_job_list(int argc, char **argv);
int cmd_job_status(int argc, char **argv);
int cmd_job_watch(int argc, char **argv);
int cmd_job_cancel(int argc, char **argv);
int cmd_job_checkpoint(int argc, char **argv);
int cmd_job_logs(int argc, char **argv);

#endif
