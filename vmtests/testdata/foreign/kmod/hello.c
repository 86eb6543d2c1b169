// SPDX-License-Identifier: GPL-2.0
/*
 * hello: a misc device that is not kmmap, to prove the harness runs any
 * module. read() returns the greeting (a module parameter); the one ioctl
 * adds two numbers; the opens parameter counts the open files.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/uaccess.h>

struct hello_add {
	__u64 a, b, sum;
};

#define HELLO_IOC_ADD _IOWR('J', 1, struct hello_add)

static char *greeting = "hello";
module_param(greeting, charp, 0444);
MODULE_PARM_DESC(greeting, "what read() returns");

static atomic_t opens = ATOMIC_INIT(0);

static int opens_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&opens));
}

static const struct kernel_param_ops opens_ops = { .get = opens_get };
module_param_cb(opens, &opens_ops, NULL, 0444);
MODULE_PARM_DESC(opens, "open files of the device");

static int hello_open(struct inode *inode, struct file *file)
{
	atomic_inc(&opens);
	return 0;
}

static int hello_release(struct inode *inode, struct file *file)
{
	atomic_dec(&opens);
	return 0;
}

static ssize_t hello_read(struct file *file, char __user *buf, size_t len, loff_t *pos)
{
	return simple_read_from_buffer(buf, len, pos, greeting, strlen(greeting));
}

static long hello_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct hello_add add;

	if (cmd != HELLO_IOC_ADD)
		return -ENOTTY;
	if (copy_from_user(&add, (void __user *)arg, sizeof(add)))
		return -EFAULT;
	add.sum = add.a + add.b;
	if (copy_to_user((void __user *)arg, &add, sizeof(add)))
		return -EFAULT;
	return 0;
}

static const struct file_operations hello_fops = {
	.owner = THIS_MODULE,
	.open = hello_open,
	.release = hello_release,
	.read = hello_read,
	.unlocked_ioctl = hello_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = default_llseek,
};

static struct miscdevice hello_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "hello",
	.fops = &hello_fops,
	.mode = 0666,
};

module_misc_device(hello_dev);

MODULE_DESCRIPTION("A device to prove the kmmap harness runs any module");
MODULE_LICENSE("GPL");
