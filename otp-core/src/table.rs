//! The macro that turns a table of one-byte wire codes into an enum, for both drivers.
//!
//! Command codes, status and error codes, object types and algorithms are each written
//! once, as a table. A byte the table does not name decodes to `Unknown(n)` and prints in
//! hex, so a value a newer firmware sends is kept rather than refused, and every encoded
//! value comes back unchanged.

/// Writes an enum from a table of `Variant = byte => "name",` rows: `to_u8`, `from_u8`
/// (never fails: unknown bytes are `Unknown(n)`), `name`, `from_name`, `ALL`, and
/// `Display`/`Debug` as the name.
#[macro_export]
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value the table does not name, kept as received.
            Unknown(u8),
        }

        impl $name {
            /// Every named value, in table order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The wire byte.
            pub const fn to_u8(self) -> u8 {
                match self {
                    $( $name::$variant => $value, )*
                    $name::Unknown(v) => v,
                }
            }

            /// The value of a wire byte; never fails.
            pub const fn from_u8(v: u8) -> $name {
                match v {
                    $( $value => $name::$variant, )*
                    other => $name::Unknown(other),
                }
            }

            /// The name Yubico gives the value (the YubiHSM 1 interface header's `YSM_*`,
            /// python-yubihsm's lower case with dashes for a YubiHSM 2), or the byte in
            /// hex for an unknown value.
            pub fn name(self) -> ::std::borrow::Cow<'static, str> {
                match self {
                    $( $name::$variant => ::std::borrow::Cow::Borrowed($text), )*
                    $name::Unknown(v) => ::std::borrow::Cow::Owned(::std::format!("0x{v:02x}")),
                }
            }

            /// The value with this name (as [`Self::name`] prints it).
            pub fn from_name(name: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.name() == name)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.name())
            }
        }

        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.name())
            }
        }
    };
}
