# The gatehouse appliance: a Debian 12 disk image with gatehouse sandboxed
# under systemd, configured at first boot from a NoCloud seed.
#
# Works with Debian's packer 1.6.6 (builders bundled; no `packer init`, no
# plugins, no data sources). Starts from a local base disk image
# (packer/make-base-image.sh, or Debian's cloud image: packer/README.md)
# and provisions gatehouse onto it:
#
#   packer build \
#     -var base_image=/var/cache/gatehouse-appliance/base-KEY.qcow2 \
#     -var build_ssh_key=/var/cache/gatehouse-appliance/base-KEY.id_ed25519 \
#     -var gatehouse_bin=target/release/gatehouse \
#     -var repo_dir=$PWD packer/gatehouse.pkr.hcl
#
# Output: OUTPUT_DIR/gatehouse-appliance.qcow2 (and .raw with -var raw=true)
# and OUTPUT_DIR/SHA256SUMS.

variable "base_image" {
  type        = string
  description = "The base disk image (qcow2 or raw) the appliance starts from."
}

variable "base_image_checksum" {
  type        = string
  default     = "none"
  description = "sha256:HEX of the base image, or none."
}

variable "build_ssh_key" {
  type        = string
  description = "Private key of the base image's build-only root login (removed at the end)."
}

variable "ssh_username" {
  type    = string
  default = "root"
}

variable "gatehouse_bin" {
  type        = string
  description = "The gatehouse release binary."
}

variable "repo_dir" {
  type        = string
  default     = "."
  description = "The gatehouse checkout (holds appliance/ and policies/)."
}

variable "output_dir" {
  type    = string
  default = "output-appliance"
}

variable "vm_name" {
  type    = string
  default = "gatehouse-appliance"
}

variable "disk_size" {
  type        = string
  default     = "8G"
  description = "Virtual disk size; the root file system grows to it at first boot."
}

variable "raw" {
  type        = bool
  default     = false
  description = "Also write a raw disk image."
}

variable "compress" {
  type        = bool
  default     = false
  description = "Compress the qcow2 (smaller, slower to build and to read)."
}

variable "accelerator" {
  type        = string
  default     = "tcg"
  description = "tcg (works everywhere), kvm where nested virtualisation works."
}

variable "cpus" {
  type    = number
  default = 2
}

variable "memory" {
  type    = number
  default = 1024
}

variable "extra_qemuargs" {
  type        = list(list(string))
  default     = []
  description = "More QEMU arguments, e.g. [[\"-cdrom\", \"seed.iso\"]] for a cloud image's build seed."
}

variable "pre_install_commands" {
  type        = list(string)
  default     = []
  description = "Commands run as root before install.sh, e.g. installing libhyperscan5 on a cloud image."
}

variable "console_log" {
  type        = string
  default     = "/dev/null"
  description = "File that receives the build VM's serial console."
}

source "qemu" "appliance" {
  iso_url          = var.base_image
  iso_checksum     = var.base_image_checksum
  disk_image       = true
  use_backing_file = false
  format           = "qcow2"
  disk_size        = var.disk_size
  disk_interface   = "virtio"
  disk_discard     = "unmap"
  disk_compression = var.compress
  skip_compaction  = false
  net_device       = "virtio-net"
  accelerator      = var.accelerator
  cpus             = var.cpus
  memory           = var.memory
  headless         = true
  vnc_bind_address = "127.0.0.1"
  # -cpu max: Hyperscan needs SSSE3, which TCG's default CPU model lacks.
  qemuargs         = concat([["-serial", "file:${var.console_log}"], ["-cpu", "max"]], var.extra_qemuargs)

  output_directory = var.output_dir
  vm_name          = "${var.vm_name}.qcow2"

  communicator         = "ssh"
  ssh_username         = var.ssh_username
  ssh_private_key_file = var.build_ssh_key
  ssh_timeout          = "10m"
  boot_wait            = "1s"
  shutdown_command     = "systemctl poweroff"
  shutdown_timeout     = "5m"
}

build {
  sources = ["source.qemu.appliance"]

  provisioner "shell" {
    inline = concat(var.pre_install_commands, ["rm -rf /tmp/gatehouse-appliance", "mkdir -p /tmp/gatehouse-appliance/appliance"])
  }

  provisioner "file" {
    source      = var.gatehouse_bin
    destination = "/tmp/gatehouse-appliance/gatehouse"
  }

  provisioner "file" {
    source      = "${var.repo_dir}/appliance/"
    destination = "/tmp/gatehouse-appliance/appliance"
  }

  provisioner "file" {
    source      = "${var.repo_dir}/policies/gatehouse.toml"
    destination = "/tmp/gatehouse-appliance/gatehouse.example.toml"
  }

  provisioner "shell" {
    inline = ["bash /tmp/gatehouse-appliance/appliance/install.sh /tmp/gatehouse-appliance"]
  }

  # Last: removes the build-only root login this build came in by.
  provisioner "shell" {
    script = "${var.repo_dir}/appliance/finalize.sh"
  }

  post-processor "shell-local" {
    environment_vars = [
      "OUT=${var.output_dir}",
      "NAME=${var.vm_name}",
      "RAW=${var.raw}",
    ]
    inline = [
      "cd \"$OUT\"",
      "if [ \"$RAW\" = true ]; then qemu-img convert -O raw \"$NAME.qcow2\" \"$NAME.raw\"; fi",
      "sha256sum \"$NAME\".qcow2 $(test \"$RAW\" = true && echo \"$NAME.raw\") > SHA256SUMS",
      "cat SHA256SUMS",
    ]
  }
}
