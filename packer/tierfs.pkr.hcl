# The tierfs appliance image for AWS (AMI), Azure (managed image) and local
# virtualization (qcow2), provisioned by the same scripts as `make image`:
# appliance/provision.sh installs the bundle (make bundle) and the units,
# appliance/cleanup.sh leaves no secrets, logs, host keys or machine-id.
#
#   make bundle
#   packer build -only=amazon-ebs.tierfs -var region=eu-west-1 packer/
#   packer build -only=azure-arm.tierfs -var azure_subscription_id=... packer/
#   packer build -only=qemu.tierfs packer/      (from a local base image)
#
# Credentials come from the builders' usual sources (AWS profile or instance
# role; Azure CLI or a service principal in the environment), never from
# this file.

variable "version" {
  type    = string
  default = "0.1.0"
}

variable "bundle" {
  type        = string
  default     = "output/tierfs-bundle.tar.gz"
  description = "tierfs, its Node runtime and units, from make bundle"
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "instance_type" {
  type        = string
  default     = "i4i.large"
  description = "an instance type with NVMe instance storage, so the build runs where the image will"
}

variable "azure_subscription_id" {
  type    = string
  default = ""
}

variable "azure_resource_group" {
  type    = string
  default = "tierfs-images"
}

variable "azure_location" {
  type    = string
  default = "westeurope"
}

variable "qemu_base_image" {
  type        = string
  default     = "output/debian-12-base.qcow2"
  description = "a Debian 12 cloud image with cloud-init (the qemu source's starting point)"
}

variable "qemu_ssh_private_key_file" {
  type        = string
  default     = "output/build-key"
  description = "key whose public half a NoCloud seed gives the base image's build user"
}

locals {
  image_name = "tierfs-${var.version}-${formatdate("YYYYMMDDhhmm", timestamp())}"
}

source "amazon-ebs" "tierfs" {
  region        = var.region
  instance_type = var.instance_type
  ami_name      = local.image_name
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      architecture        = "x86_64"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["136693071363"]
    most_recent = true
  }
  ena_support                 = true
  sriov_support               = true
  ssh_username                = "admin"
  ssh_interface               = "public_ip"
  associate_public_ip_address = true
  tags = {
    Name    = local.image_name
    Product = "tierfs"
    Version = var.version
  }
}

source "azure-arm" "tierfs" {
  subscription_id                   = var.azure_subscription_id
  managed_image_name                = local.image_name
  managed_image_resource_group_name = var.azure_resource_group
  location                          = var.azure_location
  os_type                           = "Linux"
  image_publisher                   = "Debian"
  image_offer                       = "debian-12"
  image_sku                         = "12-gen2"
  vm_size                           = "Standard_L8s_v3"
  azure_tags = {
    product = "tierfs"
    version = var.version
  }
}

source "qemu" "tierfs" {
  accelerator          = "tcg"
  disk_image           = true
  iso_url              = var.qemu_base_image
  iso_checksum         = "none"
  headless             = true
  format               = "qcow2"
  disk_size            = "4G"
  memory               = 2048
  cpus                 = 2
  output_directory     = "output/qemu-${local.image_name}"
  vm_name              = "${local.image_name}.qcow2"
  ssh_username         = "debian"
  ssh_private_key_file = var.qemu_ssh_private_key_file
  ssh_timeout          = "15m"
  shutdown_command     = "sudo systemctl poweroff"
  qemuargs = [
    ["-cpu", "max"],
    ["-smp", "2"],
  ]
}

build {
  sources = ["source.amazon-ebs.tierfs", "source.azure-arm.tierfs", "source.qemu.tierfs"]

  provisioner "file" {
    source      = var.bundle
    destination = "/tmp/tierfs-bundle.tar.gz"
  }

  provisioner "file" {
    source      = "appliance/"
    destination = "/tmp/tierfs-appliance"
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    inline = [
      "apt-get update -qq",
      "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfuse3-3 fuse3 nvme-cli cloud-init cloud-guest-utils bash-completion nfs-kernel-server samba cifs-utils nftables",
      "TIERFS_BUNDLE=/tmp/tierfs-bundle.tar.gz sh /tmp/tierfs-appliance/provision.sh",
    ]
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    inline          = ["sh /tmp/tierfs-appliance/cleanup.sh"]
  }
}
