/* coder agent: the workspace side of the agent tunnel (see agent.c). */
#ifndef AGENT_AGENT_H
#define AGENT_AGENT_H

int agent_main(int argc, char **argv);

#endif
