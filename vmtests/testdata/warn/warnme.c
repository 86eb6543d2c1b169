// SPDX-License-Identifier: GPL-2.0
/*
 * warnme: writing to /sys/module/warnme/parameters/warn makes the kernel
 * print a WARNING, so that a test can prove a command that triggers one
 * fails its run.
 */
#include <linux/bug.h>
#include <linux/module.h>

static int warnme_set(const char *val, const struct kernel_param *kp)
{
	WARN(1, "warnme: a warning asked for from userland\n");
	return 0;
}

static const struct kernel_param_ops warnme_ops = { .set = warnme_set };
module_param_cb(warn, &warnme_ops, NULL, 0200);
MODULE_PARM_DESC(warn, "write anything: the kernel warns");

MODULE_DESCRIPTION("A kernel warning on demand, for the harness's tests");
MODULE_LICENSE("GPL");
