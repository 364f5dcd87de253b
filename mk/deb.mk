# The Debian package (debian/): dpkg-buildpackage on a copy of the tree, then lintian, which
# must report no errors. The .deb lands in $(BUILD)/deb.
#
#   make deb
#   make check-package      build it, then install, start, stop, remove and purge it in a
#                           clean Debian 12 system (tests/packaging/, under qemu)

DEB_DIR := $(BUILD)/deb

.PHONY: deb check-package
deb:
	sh scripts/make-deb.sh $(DEB_DIR)

PKG_WORK := $(BUILD)/pkgtest
check-package: deb
	sh tests/packaging/run.sh $$(ls $(DEB_DIR)/pgwarden_*.deb | head -n 1) $(PKG_WORK)
