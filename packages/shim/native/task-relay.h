/* The task relay mode of the thin shim binary (task-relay.c). */
#ifndef KUASAR_TASK_RELAY_H
#define KUASAR_TASK_RELAY_H

/* argv after "relay"; kind (from the program name) only labels log lines and may be NULL. Returns the exit code. */
int relay_main(int argc, char **argv, const char *program, const char *kind);

#endif
